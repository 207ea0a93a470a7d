/* tests/rt/malloc_shim.c: an LD_PRELOAD library that counts heap and lock calls while armed.
 *
 * Interposes malloc, calloc, realloc, free, posix_memalign, aligned_alloc, memalign, valloc,
 * pvalloc (forwarded to glibc's __libc_* entry points, so no dlsym is needed on the allocation
 * path) and pthread_mutex_lock / pthread_mutex_trylock / pthread_rwlock_rdlock /
 * pthread_rwlock_wrlock / syscall (forwarded through dlsym(RTLD_NEXT), resolved in the
 * constructor). Every call made through the dynamic linker by any object of the process (the
 * program, libflatopt.so, libc's own callers) lands here. While armed (rt_shim_arm(1)) each
 * call is counted per function; the program reads the counters with rt_shim_counts().
 *
 * What this cannot see: a Rust std Mutex (futex-based: an uncontended lock is an atomic
 * compare-exchange with no call at all) and raw `syscall` instructions; the strace stage of
 * tests/rt/run.sh covers system calls, and the absence of locks on the step path is argued
 * from the source (tests/rt/README.md).
 *
 * Build: gcc -shared -fPIC -O2 -o libmalloc_shim.so malloc_shim.c   (glibc; -ldl on < 2.34)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

enum {
    K_MALLOC,
    K_CALLOC,
    K_REALLOC,
    K_FREE,
    K_POSIX_MEMALIGN,
    K_ALIGNED_ALLOC,
    K_MEMALIGN,
    K_VALLOC,
    K_MUTEX_LOCK,
    K_MUTEX_TRYLOCK,
    K_RWLOCK_RD,
    K_RWLOCK_WR,
    K_SYSCALL,
    K_COUNT
};

static const char *const k_names[K_COUNT] = {
    "malloc",        "calloc",          "realloc",    "free",
    "posix_memalign", "aligned_alloc",  "memalign",   "valloc/pvalloc",
    "pthread_mutex_lock", "pthread_mutex_trylock", "pthread_rwlock_rdlock",
    "pthread_rwlock_wrlock", "syscall()",
};

static volatile int g_armed;
static volatile unsigned long g_counts[K_COUNT];

static void count(int k)
{
    if (g_armed)
        __atomic_fetch_add(&g_counts[k], 1, __ATOMIC_RELAXED);
}

/* -- control, looked up by the test with dlsym(RTLD_DEFAULT, ...) -------------------------- */

void rt_shim_arm(int on)
{
    __atomic_store_n(&g_armed, on, __ATOMIC_SEQ_CST);
}

void rt_shim_reset(void)
{
    for (int k = 0; k < K_COUNT; k++)
        g_counts[k] = 0;
}

/* Copies up to `n` counters into `out` and returns the number of counters. */
int rt_shim_counts(unsigned long *out, int n)
{
    for (int k = 0; k < K_COUNT && k < n; k++)
        out[k] = g_counts[k];
    return K_COUNT;
}

const char *rt_shim_name(int k)
{
    return (k >= 0 && k < K_COUNT) ? k_names[k] : "?";
}

/* -- allocation ---------------------------------------------------------------------------- */

void *malloc(size_t n)
{
    count(K_MALLOC);
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    count(K_CALLOC);
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    count(K_REALLOC);
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p) /* free(NULL) is not an allocator operation */
        count(K_FREE);
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p;
    count(K_POSIX_MEMALIGN);
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    p = __libc_memalign(align, n);
    if (!p && n)
        return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    count(K_ALIGNED_ALLOC);
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n)
{
    count(K_MEMALIGN);
    return __libc_memalign(align, n);
}

void *valloc(size_t n)
{
    count(K_VALLOC);
    return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void *pvalloc(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    count(K_VALLOC);
    return __libc_memalign(page, (n + page - 1) / page * page);
}

/* -- locks and syscall() ------------------------------------------------------------------- */

static int (*real_mutex_lock)(pthread_mutex_t *);
static int (*real_mutex_trylock)(pthread_mutex_t *);
static int (*real_rwlock_rdlock)(pthread_rwlock_t *);
static int (*real_rwlock_wrlock)(pthread_rwlock_t *);
static long (*real_syscall)(long, ...);

__attribute__((constructor)) static void shim_init(void)
{
    /* Before main and unarmed: dlsym may allocate, which is fine here. */
    real_mutex_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
    real_mutex_trylock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
    real_rwlock_rdlock = (int (*)(pthread_rwlock_t *))dlsym(RTLD_NEXT, "pthread_rwlock_rdlock");
    real_rwlock_wrlock = (int (*)(pthread_rwlock_t *))dlsym(RTLD_NEXT, "pthread_rwlock_wrlock");
    real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
}

int pthread_mutex_lock(pthread_mutex_t *m)
{
    count(K_MUTEX_LOCK);
    return real_mutex_lock ? real_mutex_lock(m) : 0;
}

int pthread_mutex_trylock(pthread_mutex_t *m)
{
    count(K_MUTEX_TRYLOCK);
    return real_mutex_trylock ? real_mutex_trylock(m) : 0;
}

int pthread_rwlock_rdlock(pthread_rwlock_t *l)
{
    count(K_RWLOCK_RD);
    return real_rwlock_rdlock ? real_rwlock_rdlock(l) : 0;
}

int pthread_rwlock_wrlock(pthread_rwlock_t *l)
{
    count(K_RWLOCK_WR);
    return real_rwlock_wrlock ? real_rwlock_wrlock(l) : 0;
}

/* syscall(2) with up to 6 arguments (what Rust std's futex and getrandom calls pass). */
long syscall(long number, ...)
{
    va_list ap;
    long a[6];
    count(K_SYSCALL);
    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (!real_syscall) {
        errno = ENOSYS;
        return -1;
    }
    return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
