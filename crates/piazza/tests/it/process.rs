//! Running `piazza serve` as a child process, as an operator would.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `piazza serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts the server on an ephemeral port and waits until it is ready.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// [`Server::start`] with more `serve` options.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec![std::ffi::OsStr::new("--data-dir"), data_dir.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        Server::start_args(&args)
    }

    /// Starts the server with these `serve` arguments (`--database URL`...).
    pub fn start_args(args: &[&std::ffi::OsStr]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_piazza"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("PIAZZA_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start piazza");
        let stderr = child.stderr.take().expect("stderr");
        let mut starting = Starting(Some(child));
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = loop {
            assert!(Instant::now() < deadline, "piazza did not become ready");
            let line = lines
                .next()
                .expect("piazza exited before it was ready")
                .expect("log line");
            let line = strip_ansi(&line);
            if line.contains("NGSI-LD API ready") {
                let start = line.find("addr=").expect("address in the ready line") + 5;
                break line[start..].split_whitespace().next().expect("address").to_owned();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let child = starting.0.take().expect("child");
        Server {
            child,
            base: format!("http://{address}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

/// A failing test must not leave a server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Starting(Option<Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn serve_answers_health_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let health = reqwest::get(server.url("/health")).await.expect("health");
    assert_eq!(health.status(), 200);
    assert!(server.terminate().success(), "graceful shutdown exits 0");
}

#[test]
fn an_unusable_data_dir_is_a_plain_error_and_a_nonzero_exit() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let output = Command::new(env!("CARGO_BIN_EXE_piazza"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(file.path())
        .output()
        .expect("run piazza");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_piazza"))
        .arg("frobnicate")
        .output()
        .expect("run piazza");
    assert_eq!(output.status.code(), Some(2));
}
