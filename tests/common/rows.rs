//! One `#[test]` per table row, shared by the integration tests that hold tables
//! (`#[macro_use] #[path = "common/rows.rs"] mod rows;`).

/// `rows!(runner; name: row, ...)` makes a test `name` for each row that runs
/// `runner(stringify!(name), row)`, so that a failure names its row and every other row still
/// runs.
macro_rules! rows {
    ($runner:ident; $($name:ident: $row:expr,)*) => {
        $(
            #[test]
            fn $name() {
                $runner(stringify!($name), $row);
            }
        )*
    };
}
