//! The `bffgate` command line. Only argument handling lives here; everything else is in the
//! library.
#![forbid(unsafe_code)]

use std::{
    io::{IsTerminal as _, Read as _},
    net::TcpListener,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use base64::Engine as _;
use bffgate::{
    clock::rfc3339,
    config::Config,
    demo::{DEMO_EMAIL, DEMO_PASSWORD},
    session::users::{AfterPasswordChange, Users},
    store::Store,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bffgate",
    version,
    about = "A backend-for-frontend gateway that keeps tokens out of the browser"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables BFFGATE_<SECTION>__<KEY> override it.
    #[arg(long, global = true, env = "BFFGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(long, global = true, env = "BFFGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with the configured store.
    Serve,
    /// Run the gateway on the memory store with a seeded demo user.
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Manage users in the configured Redis store.
    #[command(subcommand)]
    User(UserCommand),
    /// List and revoke sessions in the configured Redis store.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Generate keys for the configuration.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input.
    Add {
        email: String,
        /// A role for the access token's `roles` claim (repeatable).
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// Read the password from standard input (required: passwords never go in arguments).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password, read from standard input, and revoke all their sessions.
    Passwd {
        email: String,
        #[arg(long)]
        password_stdin: bool,
        /// Keep the user's sessions (by default a password change ends them all).
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Disable a user and revoke all their sessions.
    Disable { email: String },
    /// Enable a disabled user.
    Enable { email: String },
    /// List users.
    List,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// A user's live sessions: id, created, last used, IP, user agent.
    List { email: String },
    /// Revoke every session of a user, or one session by id.
    Revoke {
        #[arg(
            long,
            value_name = "EMAIL",
            conflicts_with = "session",
            required_unless_present = "session"
        )]
        user: Option<String>,
        /// A session id from `sessions list` (ids may begin with `-`).
        #[arg(long, value_name = "ID", allow_hyphen_values = true)]
        session: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new cookie key and a new Ed25519 signing key (PKCS#8 PEM).
    Generate {
        /// Write the signing key to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        signing_key_out: Option<PathBuf>,
        /// Write the cookie key (base64) to this file (mode 0600) instead of printing it,
        /// for `cookie.key_file`.
        #[arg(long, value_name = "FILE")]
        cookie_key_out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BFFGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn read_password(password_stdin: bool) -> Result<String, String> {
    if !password_stdin {
        return Err("pass the password on standard input with --password-stdin".into());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

async fn serve(config: Config) -> Result<(), String> {
    config.require_shared_keys().map_err(|e| e.to_string())?;
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let metrics = match config
        .metrics
        .listen
        .as_deref()
        .filter(|_| config.metrics.enabled)
    {
        Some(metrics_addr) => {
            let l = TcpListener::bind(metrics_addr)
                .map_err(|e| format!("cannot listen on {metrics_addr} (metrics.listen): {e}"))?;
            let server = bffgate::metrics_server(l).map_err(|e| e.to_string())?;
            tracing::info!(addr = %metrics_addr, "metrics listening");
            Some(server)
        }
        None => None,
    };
    let deadline = config.shutdown_timeout;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = bffgate::build_server(config, listener).map_err(|e| e.to_string())?;
    tracing::info!(%addr, scheme, "bffgate listening");
    let metrics_handle = metrics.map(|m| {
        let handle = m.handle();
        actix_web::rt::spawn(m);
        handle
    });
    // actix stops accepting on SIGTERM/SIGINT and lets in-flight requests finish for up to
    // `shutdown_timeout`; the store pools close when the gateway is dropped.
    let result = server.await.map_err(|e| e.to_string());
    if let Some(handle) = metrics_handle {
        handle.stop(true).await;
    }
    tracing::info!(deadline_s = deadline.as_secs(), "bffgate stopped");
    result
}

async fn sessions(config: Config, command: SessionsCommand) -> Result<(), String> {
    let users = Users::new(users_store(&config).await?);
    match command {
        SessionsCommand::List { email } => {
            let list = users.sessions(&email).await.map_err(|e| e.to_string())?;
            println!(
                "{:<24} {:<24} {:<24} {:<39} user agent",
                "id", "created", "last used", "ip"
            );
            for f in list {
                println!(
                    "{:<24} {:<24} {:<24} {:<39} {}",
                    f.id,
                    rfc3339(f.created),
                    rfc3339(f.last_used),
                    f.ip,
                    f.user_agent
                );
            }
        }
        SessionsCommand::Revoke {
            user: Some(email), ..
        } => {
            let n = users
                .revoke_sessions(&email)
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked {n} session(s) of {email}");
        }
        SessionsCommand::Revoke {
            session: Some(id), ..
        } => {
            if users.revoke_session(&id).await.map_err(|e| e.to_string())? {
                println!("revoked session {id}");
            } else {
                return Err(format!("no live session {id}"));
            }
        }
        SessionsCommand::Revoke { .. } => return Err("give --user EMAIL or --session ID".into()),
    }
    Ok(())
}

fn keys(command: KeysCommand) -> Result<(), String> {
    let KeysCommand::Generate {
        signing_key_out,
        cookie_key_out,
    } = command;
    let cookie_key = base64::engine::general_purpose::STANDARD
        .encode(bffgate::tokens::random_cookie_key().map_err(|e| e.to_string())?);
    let pem = bffgate::tokens::pkcs8_pem(
        &bffgate::tokens::generate_ed25519_pkcs8().map_err(|e| e.to_string())?,
    );
    println!("# Fresh keys. Keep them secret; they are printed once.");
    println!("[cookie]");
    match cookie_key_out {
        Some(path) => {
            write_private(&path, format!("{cookie_key}\n").as_bytes())?;
            println!("key_file = {:?}", path.display().to_string());
        }
        None => println!("key = \"{cookie_key}\""),
    }
    println!();
    println!("[jwt]");
    match signing_key_out {
        Some(path) => {
            write_private(&path, pem.as_bytes())?;
            println!("signing_key_file = {:?}", path.display().to_string());
        }
        None => {
            println!("# save the key below to a file readable only by the gateway and set:");
            println!("# signing_key_file = \"keys/ed25519.pem\"");
            print!("{pem}");
        }
    }
    Ok(())
}

/// Creates `path` readable and writable by its owner only; refuses to overwrite.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn demo(mut config: Config, listen: String) -> Result<(), String> {
    config.listen = listen;
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let stack = bffgate::demo::start(config, listener)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "bffgate demo listening on {addr}: open {} in a browser",
        stack.page
    );
    println!("  demo user: {DEMO_EMAIL}  password: {DEMO_PASSWORD}");
    println!("  or with curl:");
    println!("    curl -i -c jar -H 'X-CSRF: 1' -H 'Content-Type: application/json' \\");
    println!("         -d '{{\"email\":\"{DEMO_EMAIL}\",\"password\":\"{DEMO_PASSWORD}\"}}' http://{addr}/auth/login");
    println!("    curl -b jar -c jar -H 'X-CSRF: 1' http://{addr}/auth/session");
    println!("    curl -b jar -c jar -H 'X-CSRF: 1' http://{addr}/api/me");
    stack.server.await.map_err(|e| e.to_string())
}

async fn users_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    if config.redis.is_none() {
        return Err("user commands need a [redis] store in the configuration (BFFGATE_REDIS__URL or --config); the embedded memory store lives inside one gateway process".into());
    }
    let store = bffgate::open_store(config).map_err(|e| e.to_string())?;
    store.ping().await.map_err(|e| e.to_string())?;
    Ok(store)
}

async fn user(config: Config, command: UserCommand) -> Result<(), String> {
    let users = Users::new(users_store(&config).await?);
    match command {
        UserCommand::Add {
            email,
            roles,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let user = users
                .add(&email, &password, roles)
                .await
                .map_err(|e| e.to_string())?;
            println!("added {} (id {})", user.email, user.id);
        }
        UserCommand::Passwd {
            email,
            password_stdin,
            keep_sessions,
        } => {
            let password = read_password(password_stdin)?;
            let sessions = if keep_sessions {
                AfterPasswordChange::KeepSessions
            } else {
                AfterPasswordChange::RevokeSessions
            };
            let n = users
                .set_password(&email, &password, sessions)
                .await
                .map_err(|e| e.to_string())?;
            match sessions {
                AfterPasswordChange::KeepSessions => {
                    println!("password changed for {email}; sessions kept")
                }
                AfterPasswordChange::RevokeSessions => {
                    println!("password changed for {email}; {n} session(s) revoked")
                }
            }
        }
        UserCommand::Disable { email } => {
            let n = users
                .set_disabled(&email, true)
                .await
                .map_err(|e| e.to_string())?;
            println!("disabled {email}; {n} session(s) revoked");
        }
        UserCommand::Enable { email } => {
            users
                .set_disabled(&email, false)
                .await
                .map_err(|e| e.to_string())?;
            println!("enabled {email}");
        }
        UserCommand::List => {
            println!("{:<40} {:<24} {:<9} roles", "email", "id", "status");
            for u in users.list().await.map_err(|e| e.to_string())? {
                let status = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<40} {:<24} {:<9} {}",
                    u.email,
                    u.id,
                    status,
                    u.roles.join(",")
                );
            }
        }
    }
    Ok(())
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command, cli.config.as_deref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command, loading the configuration for those that use it (generating keys needs
/// none, so a broken configuration cannot stop it).
async fn run(command: Command, file: Option<&std::path::Path>) -> Result<(), String> {
    let load = || Config::load(file).map_err(|e| e.to_string());
    match command {
        Command::Keys(command) => keys(command),
        Command::Serve => serve(load()?).await,
        Command::Demo { listen } => demo(load()?, listen).await,
        Command::User(command) => user(load()?, command).await,
        Command::Sessions(command) => sessions(load()?, command).await,
        Command::Config(ConfigCommand::Check) => {
            let config = load()?;
            config.require_shared_keys().map_err(|e| e.to_string())?;
            redacted_json(&config).map(|text| {
                println!("{text}");
                eprintln!("configuration is valid");
            })
        }
    }
}

fn redacted_json(config: &Config) -> Result<String, String> {
    serde_json::to_string_pretty(config).map_err(|e| e.to_string())
}
