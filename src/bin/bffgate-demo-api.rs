//! `bffgate-demo-api`: the demo upstream API on its own, for putting a real gateway in front.
#![forbid(unsafe_code)]

use std::{net::TcpListener, process::ExitCode};

use bffgate::demo::api::{build_demo_api, DemoApiSettings};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "bffgate-demo-api",
    version,
    about = "A demo API that accepts only valid bffgate access tokens"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// The gateway's JWKS.
    #[arg(long, default_value = "http://127.0.0.1:8080/.well-known/jwks.json")]
    jwks_url: String,
    /// Expected `iss` claim.
    #[arg(long, default_value = "bffgate")]
    issuer: String,
    /// Expected `aud` claim.
    #[arg(long, default_value = "api")]
    audience: String,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let listener = match TcpListener::bind(&cli.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let settings = DemoApiSettings {
        jwks_url: cli.jwks_url,
        issuer: cli.issuer,
        audience: cli.audience,
    };
    match build_demo_api(settings, listener) {
        Ok(server) => {
            eprintln!("bffgate-demo-api listening on http://{}", cli.listen);
            match server.await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
