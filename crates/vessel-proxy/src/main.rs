//! `vessel`: the proxy-wasm host's command line.
//!
//! * `vessel test SCENARIO.yaml...` runs filters against scripted traffic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vessel_host::Engine;
use vessel_proxy::harness;

#[derive(Parser)]
#[command(name = "vessel", version, about = "A proxy-wasm host")]
struct Cli {
    /// Host log level (error, warn, info, debug, trace).
    #[arg(short = 'l', long = "log-level", global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files against their filters, in-process.
    Test {
        /// Print each scenario with its observed outcome as `expect`, in the
        /// same YAML format, instead of checking.
        #[arg(long)]
        record: bool,
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .format_timestamp(None)
        .init();
    match cli.command {
        Command::Test { record, files } => {
            let engine = Engine::default();
            if record {
                for f in &files {
                    match harness::record_file(&engine, f) {
                        Ok(yaml) => println!("# {}\n{yaml}", f.display()),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                return ExitCode::SUCCESS;
            }
            let mut report = harness::Report::default();
            let mut broken = 0;
            for f in &files {
                match harness::run_file(&engine, f) {
                    Ok(results) => report.results.extend(results),
                    Err(e) => {
                        eprintln!("error: {e}");
                        broken += 1;
                    }
                }
            }
            print!("{}", report.render());
            if broken > 0 {
                eprintln!("{broken} scenario file(s) could not run");
            }
            if report.passed() && broken == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
