// Layout.cs: the C# mirror against the header, both ways. The C program generated from
// include/flatopt.h (gen_layout.py) prints every integer constant, enum constant, struct size
// and field offset/size; here each of them is one row, and every C# enum member, struct field
// and Abi constant that the C side does not have is a failing row too.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Flatopt.Tests
{
    internal static class Layout
    {
        // snake_case (or SCREAMING_CASE) -> PascalCase: struct_size -> StructSize.
        internal static string Pascal(string c)
        {
            return string.Concat(c.ToLowerInvariant().Split('_').Where(w => w.Length > 0)
                .Select(w => char.ToUpperInvariant(w[0]) + w.Substring(1)));
        }

        // PascalCase -> SCREAMING_CASE: ErrNullPointer -> ERR_NULL_POINTER, Avx2 -> AVX2.
        internal static string Screaming(string pascal)
        {
            var sb = new System.Text.StringBuilder();
            for (int i = 0; i < pascal.Length; i++)
            {
                if (i > 0 && char.IsUpper(pascal[i]))
                    sb.Append('_');
                sb.Append(char.ToUpperInvariant(pascal[i]));
            }
            return sb.ToString();
        }

        private static CNameAttribute CName(MemberInfo m)
        {
            return (CNameAttribute)m.GetCustomAttributes(typeof(CNameAttribute), false).FirstOrDefault();
        }

        // The C# Init (the library's _init) against the bytes of the header's initializer macro,
        // field by field (padding is not compared).
        private static string CompareInit(Type st, string kind, string hex, Dictionary<string, Type> enumTypes)
        {
            MethodInfo init = st.GetMethod("Init", BindingFlags.Public | BindingFlags.Static);
            T.Require(init != null, "{0} has no static Init", st.Name);
            ParameterInfo[] ps = init.GetParameters();
            object[] args = new object[ps.Length];
            if (kind != "-")
            {
                T.Require(ps.Length == 1 && ps[0].ParameterType.IsEnum, "{0}.Init takes no kind", st.Name);
                Type et = ps[0].ParameterType;
                string prefix = CName(et).Prefix;
                FieldInfo m = et.GetFields(BindingFlags.Public | BindingFlags.Static)
                    .FirstOrDefault(f => (CName(f) != null ? CName(f).Name : prefix + Screaming(f.Name)) == kind);
                T.Require(m != null, "{0} has no member for {1}", et.Name, kind);
                args[0] = m.GetValue(null);
            }
            else
                T.Require(ps.Length == 0, "{0}.Init takes arguments", st.Name);
            object value = init.Invoke(null, args);
            int size = Marshal.SizeOf(st);
            T.Require(hex.Length == 2 * size, "macro gives {0} bytes, the struct has {1}", hex.Length / 2, size);
            var ours = new byte[size];
            IntPtr mem = Marshal.AllocHGlobal(size);
            try
            {
                Marshal.StructureToPtr(value, mem, false);
                Marshal.Copy(mem, ours, 0, size);
            }
            finally
            {
                Marshal.FreeHGlobal(mem);
            }
            int fields = 0;
            foreach (FieldInfo f in st.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
            {
                int off = (int)Marshal.OffsetOf(st, f.Name);
                Type ft = f.FieldType.IsEnum ? Enum.GetUnderlyingType(f.FieldType) : f.FieldType;
                int n = Marshal.SizeOf(ft);
                for (int i = off; i < off + n; i++)
                    T.Require(Convert.ToByte(hex.Substring(2 * i, 2), 16) == ours[i],
                        "field {0}: Init gives {1}, the macro {2}", f.Name,
                        BitConverter.ToString(ours, off, n), hex.Substring(2 * off, 2 * n));
                fields++;
            }
            return fields + " fields equal";
        }

        internal static void Run(string layoutPath)
        {
            T.Section("layout: the C# mirror against include/flatopt.h (" + layoutPath + ")");
            Assembly asm = typeof(Optimizer).Assembly;
            var enumTypes = new Dictionary<string, Type>();
            var structTypes = new Dictionary<string, Type>();
            foreach (Type t in asm.GetTypes())
            {
                CNameAttribute a = CName(t);
                if (a == null)
                    continue;
                if (t.IsEnum)
                    enumTypes[a.Name] = t;
                else if (t.IsValueType)
                    structTypes[a.Name] = t;
            }
            var seenEnum = new HashSet<string>();     // "CSharpType.Member"
            var seenField = new HashSet<string>();    // "CSharpType.Field"
            var seenConst = new HashSet<string>();
            var seenTypes = new HashSet<string>();
            const BindingFlags all = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;
            int lines = 0;
            foreach (string line in File.ReadAllLines(layoutPath))
            {
                string[] w = line.Split(' ');
                lines++;
                switch (w[0])
                {
                    case "const":
                    {
                        string name = Pascal(w[1].Substring("FLATOPT_".Length));
                        FieldInfo f = typeof(Abi).GetField(name, BindingFlags.Public | BindingFlags.Static);
                        seenConst.Add(name);
                        T.Row("const " + w[1] + " = " + w[2], f != null && Convert.ToInt64(f.GetValue(null)) == long.Parse(w[2]),
                            f == null ? "Abi." + name + " missing" : "Abi." + name + " = " + f.GetValue(null));
                        break;
                    }
                    case "enum":
                    {
                        Type et;
                        if (!enumTypes.TryGetValue(w[1], out et))
                        {
                            T.Row("enum " + w[1] + "." + w[2], false, "no C# enum with [CName(\"" + w[1] + "\")]");
                            break;
                        }
                        seenTypes.Add(w[1]);
                        string prefix = CName(et).Prefix;
                        FieldInfo m = et.GetFields(BindingFlags.Public | BindingFlags.Static)
                            .FirstOrDefault(f => (CName(f) != null ? CName(f).Name : prefix + Screaming(f.Name)) == w[2]);
                        long cval = long.Parse(w[3]);
                        if (m == null)
                        {
                            T.Row("enum " + w[1] + "." + w[2] + " = " + cval, false, et.Name + " has no member for it");
                            break;
                        }
                        seenEnum.Add(et.Name + "." + m.Name);
                        long v = Convert.ToInt64(m.GetValue(null));
                        T.Row("enum " + w[1] + "." + w[2] + " = " + cval, v == cval, et.Name + "." + m.Name + " = " + v);
                        break;
                    }
                    case "struct":
                    {
                        Type st;
                        if (!structTypes.TryGetValue(w[1], out st))
                        {
                            T.Row("struct " + w[1], false, "no C# struct with [CName(\"" + w[1] + "\")]");
                            break;
                        }
                        seenTypes.Add(w[1]);
                        int size = Marshal.SizeOf(st);
                        T.Row("struct " + w[1] + " size " + w[2], size == int.Parse(w[2]), st.Name + ": Marshal.SizeOf " + size);
                        break;
                    }
                    case "field":
                    {
                        Type st;
                        if (!structTypes.TryGetValue(w[1], out st))
                            break; // reported by its struct row
                        string name = Pascal(w[2]);
                        FieldInfo f = st.GetField(name, all);
                        if (f == null)
                        {
                            T.Row("field " + w[1] + "." + w[2], false, st.Name + "." + name + " missing");
                            break;
                        }
                        seenField.Add(st.Name + "." + name);
                        long off = (long)Marshal.OffsetOf(st, name);
                        Type ft = f.FieldType.IsEnum ? Enum.GetUnderlyingType(f.FieldType) : f.FieldType;
                        int fsize = Marshal.SizeOf(ft);
                        T.Row("field " + w[1] + "." + w[2] + " offset " + w[3] + " size " + w[4],
                            off == long.Parse(w[3]) && fsize == int.Parse(w[4]),
                            st.Name + "." + name + ": offset " + off + " size " + fsize);
                        break;
                    }
                    case "init":
                    {
                        Type st;
                        if (!structTypes.TryGetValue(w[1], out st))
                        {
                            T.Row("init " + w[1], false, "no C# struct with [CName(\"" + w[1] + "\")]");
                            break;
                        }
                        string name = "init " + w[1] + (w[2] == "-" ? "" : "(" + w[2] + ")");
                        T.Run(name + ": " + st.Name + ".Init == the header's _INIT macro", () => CompareInit(st, w[2], w[3], enumTypes));
                        break;
                    }
                    default:
                        T.Row("layout line " + lines, false, "unknown line \"" + line + "\"");
                        break;
                }
            }
            // The other way: nothing in the mirror that the header does not have.
            foreach (var kv in enumTypes)
                foreach (FieldInfo f in kv.Value.GetFields(BindingFlags.Public | BindingFlags.Static))
                    if (!seenEnum.Contains(kv.Value.Name + "." + f.Name))
                        T.Row("C# " + kv.Value.Name + "." + f.Name, false, "not in the header");
            foreach (var kv in structTypes)
            {
                if (!seenTypes.Contains(kv.Key))
                    T.Row("C# struct " + kv.Value.Name, false, kv.Key + " is not in the header");
                foreach (FieldInfo f in kv.Value.GetFields(all))
                    if (!seenField.Contains(kv.Value.Name + "." + f.Name))
                        T.Row("C# " + kv.Value.Name + "." + f.Name, false, "not a field of " + kv.Key);
            }
            foreach (FieldInfo f in typeof(Abi).GetFields(BindingFlags.Public | BindingFlags.Static))
                if (!seenConst.Contains(f.Name))
                    T.Row("C# Abi." + f.Name, false, "not a #define of the header");
            T.Row("layout: header facts read", lines > 50, lines + " lines");
        }
    }
}
