//! The broker under test: the release `piazza` binary as a child process on
//! an ephemeral port, with readiness, graceful stop and /proc measurements.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a start or a stop may take before the harness gives up.
const PATIENCE: Duration = Duration::from_secs(120);

pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
}

impl Broker {
    /// Starts `bin serve` on `data_dir` and returns once `GET /health` answers
    /// 200, with the time from spawn to that answer (the cold-start time).
    /// Starts `bin serve` on `data_dir` (with extra `PIAZZA_*` settings in
    /// the environment) and returns once `GET /health` answers 200, with the
    /// time from spawn to that answer (the cold-start time).
    pub async fn start(
        bin: &Path,
        data_dir: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Broker, Duration)> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            // A batch of 1000 template entities is ~1.5 MB, over the 1 MiB
            // default body limit.
            .args(["--max-body-bytes", "67108864"])
            .env("PIAZZA_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let mut log = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // A thread, not a task: it must keep draining stderr (or the broker
        // would block on a full pipe) for as long as the broker lives.
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if line.contains("NGSI-LD API ready") {
                    if let (Some(tx), Some(addr)) = (ready_tx.take(), parse_ready_addr(&line)) {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match tokio::time::timeout(PATIENCE, ready_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the broker did not log its address; see its log")
            }
        };
        let broker = Broker { child, addr };
        while !health_ok(addr).await {
            if started.elapsed() > PATIENCE {
                bail!("the broker never answered /health with 200");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok((broker, started.elapsed()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the broker has used so far: user plus system, all threads.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        parse_cpu_time(&stat).context("no utime/stime in /proc/<pid>/stat")
    }

    /// Peak resident set size so far, in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        parse_vm_hwm(&status).context("no VmHWM in /proc/<pid>/status")
    }

    /// SIGTERM, then wait for a graceful exit (the broker checkpoints and
    /// closes SQLite); SIGKILL only if it does not stop in time.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // `kill` rather than libc: the workspace forbids unsafe code.
        let sent = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        if !sent.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("the broker ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A harness error must not leave a broker running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `... NGSI-LD API ready addr=127.0.0.1:43121` → the address.
pub fn parse_ready_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// `VmHWM:   123456 kB` → bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `utime + stime` of a `/proc/<pid>/stat` line. They count clock ticks
/// of USER_HZ, which Linux fixes at 100 per second in its ABI whatever the
/// kernel's own tick, so one tick is 10 ms.
pub fn parse_cpu_time(stat: &str) -> Option<Duration> {
    // Field 2, the command name, is in parentheses and may hold spaces and
    // parentheses itself: the fields after the last `)` start at field 3,
    // so utime (field 14) and stime (15) are the 12th and 13th of them.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One `GET /health` on a fresh connection; true on a 200.
async fn health_ok(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(&head[9..12] == b"200")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

/// Total size of the files under `dir` (the SQLite file, its WAL and SHM).
pub fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_past_a_command_name_with_spaces() {
        // A real line of `/proc/self/stat`, with a command name that would
        // shift every field if the parser split from the start.
        let stat = "4242 (piazza (x) y) S 1 4242 4242 0 -1 4194560 1369 0 0 0 \
                    731 158 0 0 20 0 7 0 3151 1486212 95882 18446744073709551615";
        assert_eq!(parse_cpu_time(stat), Some(Duration::from_millis((731 + 158) * 10)));
        assert_eq!(parse_cpu_time("4242 (piazza) S 1"), None);
        assert_eq!(parse_cpu_time("no parenthesis"), None);
    }

    #[test]
    fn reads_the_ready_line() {
        let line = "2024-05-01T10:00:00.123Z  INFO piazza: NGSI-LD API ready addr=127.0.0.1:43121";
        assert_eq!(parse_ready_addr(line), Some("127.0.0.1:43121".parse().unwrap()));
        assert_eq!(parse_ready_addr("INFO piazza: embedded store open path=x"), None);
    }

    #[test]
    fn reads_vm_hwm() {
        let status = "Name:\tpiazza\nVmPeak:\t  999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
    }
}
