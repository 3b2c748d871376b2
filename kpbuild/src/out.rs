//! Standard output of the commands. A reader that goes away early
//! (`kpbuild inspect … | head`) ends the process quietly with success, as
//! with other Unix tools, instead of a panic on the broken pipe.

use std::io::Write;

/// Writes one line to stdout (see [`outln!`](crate::outln)).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("kpbuild: cannot write to standard output: {e}");
        std::process::exit(i32::from(crate::exit::ERROR));
    }
}

/// `println!` for command output: see [`line`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
