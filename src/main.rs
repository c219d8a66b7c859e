//! The `pollchat` binary: parse flags, start logging, call the library.
//! Start-up problems print one line and exit with status 2.

use std::process::ExitCode;

use clap::Parser;
use log::{info, warn};

use pollchat::app::App;
use pollchat::chat::Chat;
use pollchat::cli::{Cli, Command};
use pollchat::config::Config;
use pollchat::engine::Server;
use pollchat::quiz::{Quiz, questions};

// The unwinder (which `catch_unwind` in logging.rs needs) linked into the
// binary, like `gcc -static-libgcc`, instead of loading libgcc_s.so: one
// shared library less to map (84 KiB of an idle server's RSS) for 24 KB of
// binary. It declares nothing; it only asks the linker for libgcc_eh.a.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[link(name = "gcc_eh", kind = "static")]
unsafe extern "C" {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Serve(args) => {
            if let Err(e) = pollchat::logging::init(args.server.log_level()) {
                return start_error(&e);
            }
            let (config, settings) = match args.configure() {
                Ok(both) => both,
                Err(e) => return start_error(&e),
            };
            if settings.op_secret.is_some() {
                info!("operators: /op is enabled");
            }
            serve(config, Chat::with(settings))
        }
        Command::Quiz(args) => {
            if let Err(e) = pollchat::logging::init(args.server.log_level()) {
                return start_error(&e);
            }
            let questions = match &args.questions {
                Some(path) => match questions::load(path) {
                    Ok(questions) => questions,
                    Err(e) => return start_error(&e),
                },
                None => questions::builtin(),
            };
            info!(
                "quiz: {} questions, {} s each, {} players to start",
                questions.len(),
                args.question_secs,
                args.min_players
            );
            serve(
                args.server.config(args.port),
                Quiz::new(questions, args.settings()),
            )
        }
        Command::Connect(args) => {
            pollchat::client::run(&args.address, args.name.as_deref(), &args.tls)
        }
        Command::Bench(args) => bench(&args),
    }
}

/// `pollchat bench`: run, print, and exit 1 if anything was lost.
fn bench(args: &pollchat::bench::BenchArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => return start_error(&e),
    };
    if config.part.is_some() {
        // A `--workers` process: it speaks to its coordinator, not to us.
        return match pollchat::bench::fleet::work(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => start_error(&e),
        };
    }
    let report = match pollchat::bench::run(&config) {
        Ok(report) => report,
        Err(e) => return start_error(&e),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => return start_error(&e),
        }
    } else {
        print!("{report}");
    }
    if report.lost > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Bind, say where, and run `app` until shut down.
fn serve<A: App + Send + 'static>(config: Config, app: A) -> ExitCode {
    let engine = config.engine;
    let plain = config.plain;
    let https = config.web.as_ref().is_some_and(|w| w.https.is_some());
    // Every client is a file: take the open files the system allows.
    match pollchat::config::raise_fd_limit() {
        Ok(Some((before, after))) => info!("open-file limit raised from {before} to {after}"),
        Ok(None) => {}
        Err(e) => warn!("could not raise the open-file limit: {e}"),
    }
    let cap = pollchat::config::engine_client_cap(config.limits.max_clients, engine);
    let server = match Server::bind(config, app) {
        Ok(server) => server,
        Err(e) => return start_error(&e),
    };
    let mut listening = match server.tls_addr() {
        None => format!("listening on {}", server.local_addr()),
        Some(tls) if plain => format!("listening on {}, TLS on {tls}", server.local_addr()),
        Some(tls) => format!("listening on {tls}, TLS only"),
    };
    if let Some(web) = server.web_addr() {
        let scheme = if https { "https" } else { "http" };
        listening.push_str(&format!(", web page on {scheme}://{web}/"));
    }
    info!("{listening} (engine: {engine}; {cap})");
    exit_with(server.run())
}

/// `--help` and `--version` print normally; real mistakes get one line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = e.render().to_string();
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "the following required arguments were not provided:" lists them on
    // the indented lines after it: keep those on the one line.
    let listed: Vec<&str> = if first.ends_with(':') {
        lines
            .take_while(|l| l.starts_with("  "))
            .map(str::trim)
            .collect()
    } else {
        Vec::new()
    };
    let first = if listed.is_empty() {
        first.to_string()
    } else {
        format!("{first} {}", listed.join(", "))
    };
    eprintln!("pollchat: {first} (see --help)");
    ExitCode::from(2)
}

/// Before any exit, the log is flushed, so that its last lines come out
/// (the logging thread writes them) and come before this one.
fn start_error(e: &dyn std::fmt::Display) -> ExitCode {
    log::logger().flush();
    eprintln!("pollchat: {e}");
    ExitCode::from(2)
}

fn exit_with(result: std::io::Result<()>) -> ExitCode {
    log::logger().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pollchat: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
