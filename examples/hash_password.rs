//! Makes the secrets the other examples need.
//!
//! ```text
//! cargo run --example hash_password                  # type a password, get its PHC string
//! echo 'secret' | cargo run --example hash_password  # the same from a pipe
//! cargo run --example hash_password -- --secret      # a fresh JWT_SECRET
//! ```

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tower_auth::PasswordHasher;

const USAGE: &str = "\
usage: hash_password [--secret]

Without arguments: reads a password from stdin (without echo on a terminal,
one line from a pipe) and prints its argon2id PHC string, ready for a user
store.

  --secret, --jwt-secret   print a fresh random secret for JWT_SECRET instead
                           (32 random bytes, base64url without padding)
  -h, --help               print this help";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => hash_password().await,
        ["--secret" | "--jwt-secret"] => jwt_secret(),
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("hash_password: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn hash_password() -> Result<String, Box<dyn std::error::Error>> {
    let password = if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        if rpassword::prompt_password("Again: ")? != password {
            return Err("the passwords differ".into());
        }
        password
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        // Only the line ending goes: spaces are part of a password.
        let password = line.strip_suffix('\n').unwrap_or(&line);
        password.strip_suffix('\r').unwrap_or(password).to_owned()
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    // Hashing runs on a blocking thread, so even this tool needs a runtime.
    Ok(PasswordHasher::new().hash(&password).await?)
}

/// HS256 wants at least 32 bytes of key; base64url keeps them printable.
/// The example servers use `JWT_SECRET`'s bytes as they are (43 of them).
fn jwt_secret() -> Result<String, Box<dyn std::error::Error>> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|err| format!("no randomness: {err}"))?;
    Ok(URL_SAFE_NO_PAD.encode(secret))
}
