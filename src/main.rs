use std::process::ExitCode;

fn main() -> ExitCode {
    ownlist::cli::main()
}
