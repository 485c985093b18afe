//! Running the `sluice` binary in tests: the command, its output, its log
//! lines as they come, and a free port for its servers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The `sluice` binary, logging warnings only, run in the temporary
/// directory (default outputs such as dead letters land outside the repository).
pub fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env("SLUICE_LOG", "warn").current_dir(std::env::temp_dir());
    c
}

/// Asserts the command succeeded (showing both streams if not); its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of a child's stream, as they are written.
pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (a minute at most) for a line of `rx` holding `what`; the lines
/// seen are kept in `seen`.
pub fn wait_for(rx: &Receiver<String>, seen: &mut Vec<String>, what: &str) -> bool {
    wait_for_all(rx, seen, &[what])
}

/// Waits (a minute at most) for a line of `rx` holding every one of `what`.
pub fn wait_for_all(rx: &Receiver<String>, seen: &mut Vec<String>, what: &[&str]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if seen.iter().any(|l| what.iter().all(|w| l.contains(w))) {
            return true;
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => return false,
        }
    }
}

/// A loopback port free now (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
