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

use bffgate::{
    config::Config,
    demo::{DEMO_EMAIL, DEMO_PASSWORD},
    store::Store,
    users::Users,
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
    /// Set a user's password, read from standard input.
    Passwd {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user and revoke all their sessions.
    Disable { email: String },
    /// Enable a disabled user.
    Enable { email: String },
    /// List users.
    List,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BFFGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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

fn load(config: &Option<PathBuf>) -> Result<Config, String> {
    Config::load(config.as_deref()).map_err(|e| e.to_string())
}

async fn serve(config: Config) -> Result<(), String> {
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let server = bffgate::build_server(config, listener).map_err(|e| e.to_string())?;
    tracing::info!(%addr, "bffgate listening");
    server.await.map_err(|e| e.to_string())
}

async fn demo(mut config: Config, listen: String) -> Result<(), String> {
    config.listen = listen;
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let stack = bffgate::demo::start(config, listener)
        .await
        .map_err(|e| e.to_string())?;
    let page = if addr.ip().is_loopback() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    println!("bffgate demo listening on {addr}: open {page} in a browser");
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
        } => {
            let password = read_password(password_stdin)?;
            users
                .set_password(&email, &password)
                .await
                .map_err(|e| e.to_string())?;
            println!("password changed for {email}");
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
    init_logging();
    let result = match load(&cli.config) {
        Err(e) => Err(e),
        Ok(config) => match cli.command {
            Command::Serve => serve(config).await,
            Command::Demo { listen } => demo(config, listen).await,
            Command::User(command) => user(config, command).await,
            Command::Config(ConfigCommand::Check) => redacted_json(&config).map(|text| {
                println!("{text}");
                eprintln!("configuration is valid");
            }),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn redacted_json(config: &Config) -> Result<String, String> {
    serde_json::to_string_pretty(config).map_err(|e| e.to_string())
}
