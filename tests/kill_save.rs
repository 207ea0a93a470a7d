//! Kill during save: a child process saves checkpoints in a loop with `Optimizer::save_file`
//! to one path, alternating between different optimizer states, and is killed with SIGKILL at
//! random moments, many times. After every kill the file at the path must load intact
//! (`Optimizer::load_file` into an optimizer of the same configuration) and be exactly one of
//! the states written. The child is this test binary itself, re-run in child mode
//! (`save_loop_child`, selected by an environment variable), so no helper binary is needed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flatopt::{Base, Config, Optimizer, Schedule};

/// Set (to the checkpoint path) in the child's environment.
const CHILD_ENV: &str = "FLATOPT_KILL_SAVE_CHILD";
const RUNS: usize = 200;
/// Stop early (with at least `MIN_RUNS` runs) if the machine is so slow that `RUNS` would take
/// longer than this: the whole test must stay well under 30 s.
const TIME_BUDGET: Duration = Duration::from_secs(15);
const MIN_RUNS: usize = 20;
/// Elements per buffer: large enough that a save (about 1.2 MB written and fsynced) takes a
/// while, so that many kills land in the middle of one.
const LEN: usize = 60_000;
const STATES: usize = 3;
/// Printed by the child right before its first save.
const READY: &str = "FLATOPT-SAVE-LOOP-READY";
/// Printed by the child after save number `i` (0-based, of state `i % STATES`) returned.
const SAVED: &str = "FLATOPT-SAVE-LOOP-SAVED";

fn config() -> Config {
    Config::with_schedule(
        Base::adam(),
        Schedule::cosine_annealing_warm_restarts(1e-2, 2, 2, 1e-4),
    )
    .lookahead(2, 0.5)
    .clip_norm(1.0)
}

fn params() -> Vec<Vec<f32>> {
    vec![
        (0..LEN).map(|i| (i % 97) as f32 * 0.01 - 0.4).collect(),
        (0..LEN / 3).map(|i| (i % 13) as f32 * -0.02).collect(),
    ]
}

fn registered() -> Optimizer {
    let p = params();
    let mut opt = Optimizer::new(config()).unwrap();
    opt.register(&[&p[0], &p[1]]).unwrap();
    opt
}

/// The checkpoints of the states the child writes: after 1, 2, ... `STATES` updates.
fn states() -> Vec<Vec<u8>> {
    let mut p = params();
    let mut opt = registered();
    (0..STATES)
        .map(|s| {
            let g: Vec<Vec<f32>> = p
                .iter()
                .map(|b| {
                    (0..b.len())
                        .map(|i| ((i + s * 7) % 11) as f32 * 0.01 - 0.05)
                        .collect()
                })
                .collect();
            let (p0, p1) = p.split_at_mut(1);
            opt.step(&mut [&mut p0[0], &mut p1[0]], &[&g[0], &g[1]])
                .unwrap();
            opt.save()
        })
        .collect()
}

/// Child mode: save the states in turn to the path in `CHILD_ENV` until killed, announcing
/// each completed save on stdout. Without the variable (an ordinary test run) it does nothing.
#[test]
fn save_loop_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let opts: Vec<Optimizer> = states()
        .iter()
        .map(|bytes| {
            let mut o = registered();
            o.load(bytes).unwrap();
            o
        })
        .collect();
    use std::io::Write;
    let mut out = std::io::stdout();
    // libtest may have printed "test save_loop_child ... " on the same line: start a new one.
    writeln!(out, "\n{READY}").unwrap();
    out.flush().unwrap();
    for i in 0usize.. {
        opts[i % STATES].save_file(&path).unwrap();
        writeln!(out, "{SAVED} {i}").unwrap();
        out.flush().unwrap();
    }
}

/// Records one announcement of the child: `done` saves completed, and the running estimate of
/// the duration of a save from the time between two announcements.
fn on_event(
    (event, at): (Option<usize>, Instant),
    done: &mut usize,
    last_at: &mut Option<Instant>,
    save_us: &mut u64,
) {
    if let Some(i) = event {
        *done = i + 1;
        if let Some(prev) = last_at.replace(at) {
            let us = at.duration_since(prev).as_micros() as u64;
            *save_us = (*save_us * 3 + us) / 4;
        }
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped on drop, also when the test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SplitMix64: deterministic kill delays.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which state the file holds, or why it is not one of them.
fn check_file(path: &Path, states: &[Vec<u8>]) -> Result<usize, String> {
    let mut opt = registered();
    opt.load_file(path).map_err(|e| e.to_string())?;
    let bytes = opt.save();
    states
        .iter()
        .position(|s| *s == bytes)
        .ok_or_else(|| "loads, but is none of the states written".to_string())
}

#[test]
fn sigkill_during_save_never_loses_the_checkpoint() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("flatopt-kill-save-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("ckpt.bin");
    let states = states();
    assert!(
        states.windows(2).all(|w| w[0] != w[1]),
        "states must differ"
    );
    // The file exists before the first child starts: it must never be lost afterwards.
    let mut first = registered();
    first.load(&states[0]).unwrap();
    first.save_file(&path).unwrap();

    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut rng = 0x5EED_u64;
    let (mut runs, mut lost, mut temp_left) = (0usize, 0usize, 0usize);
    let mut seen = [0usize; STATES];
    // The state the file held after the previous run (the parent wrote state 0 first).
    let mut previous = 0;
    // Running estimate of the duration of one save (fsync included), in microseconds.
    let mut save_us = 3_000u64;
    let timeout = Duration::from_secs(10);
    while runs < RUNS && (runs < MIN_RUNS || start.elapsed() < TIME_BUDGET) {
        let child = Command::new(&exe)
            .args([
                "save_loop_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the child");
        let mut child = KillOnDrop(child);
        // The child's announcements, read on another thread (so that a silent child cannot
        // hang the test): None for READY, Some(i) for save i done, with the time seen.
        let out = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<(Option<usize>, Instant)>();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let event = if line.contains(READY) {
                    None
                } else if let Some(i) = line.strip_prefix(SAVED) {
                    Some(i.trim().parse().unwrap())
                } else {
                    continue;
                };
                if tx.send((event, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let mut done = 0usize; // saves completed (announced)
        let mut last_at = None;
        let ready = rx
            .recv_timeout(timeout)
            .expect("the child did not get ready");
        assert!(ready.0.is_none(), "first event: {ready:?}");
        // Let 0, 1 or 2 saves complete, then kill at a random moment within about 1.5 saves:
        // before, during or after the next one.
        let wait_for = (next(&mut rng) % 3) as usize;
        while done < wait_for {
            let e = rx.recv_timeout(timeout).expect("the child stopped saving");
            on_event(e, &mut done, &mut last_at, &mut save_us);
        }
        let delay = next(&mut rng) % (save_us * 3 / 2 + 1);
        std::thread::sleep(Duration::from_micros(delay));
        child.0.kill().unwrap(); // SIGKILL
        let status = child.0.wait().unwrap();
        assert!(!status.success(), "the child was not killed: {status:?}");
        drop(child);
        // Announcements still in the pipe: the reader ends at end of file.
        while let Ok(e) = rx.recv_timeout(timeout) {
            on_event(e, &mut done, &mut last_at, &mut save_us);
        }
        runs += 1;
        // The file holds the last announced save, or the one in progress when the kill came
        // (its rename may have happened before it could be announced); before the child's
        // first save completed, what the previous run left (or save 0, in progress).
        let allowed = if done == 0 {
            [previous, 0]
        } else {
            [(done - 1) % STATES, done % STATES]
        };
        match check_file(&path, &states) {
            Ok(i) if allowed.contains(&i) => {
                seen[i] += 1;
                previous = i;
            }
            Ok(i) => {
                lost += 1;
                eprintln!("run {runs}: the file went back to state {i} after {done} saves");
                previous = i;
            }
            Err(e) => {
                lost += 1;
                eprintln!("run {runs}: checkpoint lost: {e}");
            }
        }
        // A killed save leaves its temporary file behind (nobody can remove it): count them
        // and clean up.
        for entry in std::fs::read_dir(&dir.0).unwrap() {
            let p = entry.unwrap().path();
            if p != path {
                temp_left += 1;
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    println!(
        "kill during save: {runs} runs in {:.1} s, {lost} lost checkpoints, {temp_left} runs \
         killed mid-save (temporary file left behind), file held state {seen:?}, one save \
         takes about {} us",
        start.elapsed().as_secs_f64(),
        save_us
    );
    assert_eq!(lost, 0, "checkpoints lost in {runs} runs");
    assert!(runs >= MIN_RUNS);
    assert!(
        seen.iter().filter(|&&n| n > 0).count() >= 2,
        "the kills never caught the file in more than one state: {seen:?}"
    );
}
