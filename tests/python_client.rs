//! An unmodified redis-py (RESP3 by default since redis-py 8) against the real
//! binary: `tests/python/client_check.py`, once without and once with a password.
//!
//! Run with `cargo test --test python_client`. Skipped, with a message, when
//! `python3 -c 'import redis'` fails (CI installs the package with pip).
mod util;

use std::process::Command;

use util::TimewheelServer;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");

/// `true` if `python3` can import `redis`; otherwise says why the test is skipped.
fn python_redis_available() -> bool {
    match Command::new("python3")
        .args(["-c", "import redis"])
        .output()
    {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "SKIPPED: python3 cannot import redis (pip install redis): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED: python3 not runnable: {e}");
            false
        }
    }
}

fn run_script(server: &TimewheelServer, password: Option<&str>) {
    let port = server.port().to_string();
    let mut args = vec![SCRIPT, "--port", &port];
    if let Some(password) = password {
        args.extend(["--password", password]);
    }
    let output = Command::new("python3")
        .args(&args)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{SCRIPT} failed ({}):\n{stdout}\n{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    assert!(stdout.starts_with("ok"), "{stdout}");
}

#[test]
fn redis_py_default_client() {
    if !python_redis_available() {
        return;
    }
    let server = TimewheelServer::start(&[]);
    run_script(&server, None);
}

#[test]
fn redis_py_with_a_password() {
    if !python_redis_available() {
        return;
    }
    let password = "py-secret-7d1e";
    let server = TimewheelServer::start(&["--requirepass", password]);
    run_script(&server, Some(password));
}
