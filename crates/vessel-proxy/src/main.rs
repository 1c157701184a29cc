//! `vessel`: the proxy-wasm host's command line.
//!
//! * `vessel test SCENARIO.yaml...` runs filters against scripted traffic.
//! * `vessel run -c envoy.yaml` serves an Envoy bootstrap's listeners with
//!   their wasm filters, and its admin endpoints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vessel_host::{CacheConfig, Engine, EngineConfig};
use vessel_proxy::harness;
use vessel_proxy::run::{self, RunOptions};

/// mimalloc, not the system allocator: a stream allocates many small
/// blocks (maps, contexts, futures) that glibc's malloc serves slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "vessel", version, about = "A proxy-wasm host")]
struct Cli {
    /// Host log level (error, warn, info, debug, trace).
    #[arg(short = 'l', long = "log-level", global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

/// Where compiled modules are cached (every command that loads modules).
#[derive(Args)]
struct ModuleCacheArgs {
    /// Cache compiled modules in DIR (default: $XDG_CACHE_HOME/vessel/modules,
    /// else ~/.cache/vessel/modules).
    #[arg(long, value_name = "DIR", conflicts_with = "no_module_cache")]
    module_cache_dir: Option<PathBuf>,
    /// Compile every module afresh; read and write no module cache.
    #[arg(long)]
    no_module_cache: bool,
}

impl ModuleCacheArgs {
    fn config(self) -> CacheConfig {
        match (self.module_cache_dir, self.no_module_cache) {
            (_, true) => CacheConfig::disabled(),
            (Some(dir), false) => CacheConfig::in_dir(dir),
            (None, false) => CacheConfig::user_default(),
        }
    }
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
        #[command(flatten)]
        module_cache: ModuleCacheArgs,
    },
    /// Serve an Envoy v3 bootstrap (listeners, wasm filters, routes,
    /// clusters, admin) until SIGTERM or Ctrl-C.
    Run {
        /// The Envoy bootstrap YAML.
        #[arg(short = 'c', long = "config-path")]
        config: PathBuf,
        /// Worker threads, and VMs per wasm filter (default: the number of
        /// cores, as Envoy).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Write one access log line per request on stdout.
        #[arg(long)]
        access_log: bool,
        /// Seconds connections in flight may take to finish on shutdown, and
        /// after a reload replaced or removed their listener's chains.
        #[arg(long, default_value_t = run::DEFAULT_DRAIN_TIMEOUT.as_secs())]
        drain_time_s: u64,
        #[command(flatten)]
        module_cache: ModuleCacheArgs,
        /// Write the admin listener's address (`ip:port`) to FILE once the
        /// listeners are bound, as Envoy does; with `port_value: 0`
        /// listeners, `GET /listeners?format=json` on it tells their ports.
        #[arg(long, value_name = "FILE")]
        admin_address_path: Option<PathBuf>,
        /// How a module not in the module cache is compiled: `tiered`
        /// (Winch first, Cranelift in the background; the switch starts the
        /// guest's state over), `cranelift` (before the filter serves) or
        /// `winch` (never upgraded; for measurements).
        #[arg(long, default_value = "tiered", value_parser = parse_compilation)]
        compilation: run::Compilation,
        /// Reserve no address space for VMs up front (wasmtime's pooling
        /// allocator takes about 4 GiB per VM slot): for a small `ulimit -v`
        /// or under valgrind. VMs are slower to create.
        #[arg(long)]
        no_pooling: bool,
    },
    /// Run scenario files in-process, through `vessel run` and through real
    /// Envoy, and compare each with Envoy (`cargo xtask envoy-diff`).
    EnvoyDiff {
        /// The Envoy binary.
        #[arg(long)]
        envoy: PathBuf,
        /// `DEVIATIONS.md`, whose entry ids scenarios may list.
        #[arg(long)]
        deviations: PathBuf,
        /// Write the generated conformance table here.
        #[arg(long)]
        conformance: Option<PathBuf>,
        /// Run only these backends (comma-separated: in-process, vessel-run,
        /// envoy); the others report every file as not run. Default: all.
        #[arg(long, value_delimiter = ',')]
        backends: Vec<harness::diff::Backend>,
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        module_cache: ModuleCacheArgs,
    },
}

fn parse_compilation(s: &str) -> Result<run::Compilation, String> {
    run::Compilation::parse(s)
        .ok_or_else(|| format!("`{s}`: expected `tiered`, `cranelift` or `winch`"))
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .format_timestamp(None)
        .init();
    match cli.command {
        Command::Run {
            config,
            concurrency,
            access_log,
            drain_time_s,
            module_cache,
            admin_address_path,
            compilation,
            no_pooling,
        } => {
            let module_cache = module_cache.config();
            let options = RunOptions {
                concurrency,
                access_log,
                drain_timeout: Duration::from_secs(drain_time_s),
                module_cache,
                admin_address_path,
                compilation,
                pooling: !no_pooling,
                ..RunOptions::new(config)
            };
            match run::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::EnvoyDiff {
            envoy,
            deviations,
            conformance,
            backends,
            files,
            module_cache,
        } => envoy_diff(
            envoy,
            &deviations,
            conformance,
            backends,
            &files,
            module_cache.config(),
        ),
        Command::Test {
            record,
            files,
            module_cache,
        } => {
            let engine = match Engine::new(EngineConfig {
                cache: module_cache.config(),
                ..EngineConfig::default()
            }) {
                Ok(engine) => engine,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if record {
                for f in &files {
                    match harness::record_file(&engine, f) {
                        Ok(yaml) => println!("---\n# {}\n{yaml}", f.display()),
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

/// `vessel envoy-diff`: exit 0 when every difference is a listed deviation.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn envoy_diff(
    envoy: PathBuf,
    deviations: &std::path::Path,
    conformance: Option<PathBuf>,
    backends: Vec<harness::diff::Backend>,
    files: &[PathBuf],
    module_cache: CacheConfig,
) -> ExitCode {
    let known = match std::fs::read_to_string(deviations) {
        Ok(md) => harness::diff::deviation_ids(&md),
        Err(e) => {
            eprintln!("error: {}: {e}", deviations.display());
            return ExitCode::from(2);
        }
    };
    let vessel = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find the vessel binary: {e}");
            return ExitCode::from(2);
        }
    };
    let options = harness::diff::Options {
        vessel,
        envoy,
        known_deviations: known,
        backends,
        module_cache,
    };
    let report = match harness::diff::run(&options, files) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}\n{}", report.table(), report.details());
    if let Some(path) = conformance
        && let Err(e) = std::fs::write(&path, report.conformance_md())
    {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if report.ok() {
        println!("envoy-diff: every difference from Envoy is a listed deviation");
        ExitCode::SUCCESS
    } else {
        let n = report
            .files
            .iter()
            .filter(|f| !f.problems.is_empty())
            .count();
        println!(
            "envoy-diff: {n} file(s) differ from Envoy without a listed deviation:\n\n{}",
            report.failures()
        );
        ExitCode::FAILURE
    }
}
