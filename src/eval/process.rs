//! Running external evaluator programs: spawned without a shell in a process group of their own
//! (so a timeout, or a second Ctrl-C, kills the program and everything it started), with stdout
//! read line by line and the tail of stderr kept for failure reports.
//!
//! A program's output is not trusted: bytes that are not UTF-8 are replaced (U+FFFD), a line
//! longer than [`MAX_LINE_BYTES`] is cut, and at most [`MAX_PENDING_BYTES`] of unread lines are
//! kept (the oldest are dropped first, and counted), so a program that floods stdout costs a
//! bounded amount of memory.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::{failpoint, interrupt};

/// How much of a program's stderr a failure report quotes.
const STDERR_TAIL_BYTES: usize = 2000;
/// The longest stdout line kept whole (a reply is far shorter); the rest of a longer line is
/// dropped.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Unread stdout kept per program; older lines are dropped beyond it.
pub const MAX_PENDING_BYTES: usize = 4 << 20;

/// Stdout lines read but not yet taken.
#[derive(Default)]
struct Pending {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: usize,
    closed: bool,
}

/// The stdout reader's output, shared with the thread that fills it.
#[derive(Default)]
struct Stdout {
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl Stdout {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `source` to its end, line by line, within the limits above.
    fn fill(&self, source: impl Read) {
        let mut reader = BufReader::new(source);
        let mut line = Vec::new();
        let mut cut = 0usize;
        loop {
            let (consumed, ended) = match reader.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(chunk) => {
                    let end = chunk.iter().position(|&b| b == b'\n');
                    let take = end.map_or(chunk.len(), |e| e + 1);
                    let room = MAX_LINE_BYTES.saturating_sub(line.len());
                    let body = &chunk[..end.unwrap_or(chunk.len())];
                    line.extend_from_slice(&body[..body.len().min(room)]);
                    cut += body.len().saturating_sub(room);
                    (take, end.is_some())
                }
            };
            reader.consume(consumed);
            if ended {
                self.push(&line, cut);
                line.clear();
                cut = 0;
            }
        }
        if !line.is_empty() {
            self.push(&line, cut);
        }
        self.pending().closed = true;
        self.ready.notify_all();
    }

    fn push(&self, bytes: &[u8], cut: usize) {
        let text = String::from_utf8_lossy(bytes)
            .trim_end_matches('\r')
            .to_string();
        let mut pending = self.pending();
        pending.dropped += cut;
        pending.bytes += text.len();
        pending.lines.push_back(text);
        while pending.bytes > MAX_PENDING_BYTES {
            let Some(old) = pending.lines.pop_front() else {
                break;
            };
            pending.bytes -= old.len();
            pending.dropped += old.len();
        }
        drop(pending);
        self.ready.notify_all();
    }
}

/// A running evaluator program.
pub struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Stdout>,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    /// Whether the child has been reaped (its process group is then forgotten).
    reaped: bool,
}

/// Why waiting for a line from a program stopped without one.
pub enum Silence {
    /// The time limit passed (the program is still running).
    Timeout,
    /// The program closed its stdout, usually by exiting.
    Closed,
}

impl Process {
    /// Starts `argv` with extra environment `env`, stdin piped when `interactive` (else null).
    pub fn spawn(
        argv: &[String],
        env: &BTreeMap<String, String>,
        interactive: bool,
    ) -> Result<Process, String> {
        let (program, args) = argv.split_first().ok_or("the argv is empty")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env)
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        interrupt::register_group(child.id());
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            interrupt::unregister_group(child.id());
            return Err(format!("cannot read the output of {program:?}"));
        };
        let stdout = Arc::new(Stdout::default());
        let fill = Arc::clone(&stdout);
        thread::spawn(move || fill.fill(out));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let keep = Arc::clone(&tail);
        thread::spawn(move || {
            let mut reader = BufReader::new(err);
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut tail = keep.lock().unwrap_or_else(|p| p.into_inner());
                tail.extend(&chunk[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                tail.drain(..excess);
            }
        });
        failpoint::hit(failpoint::EVALUATION);
        Ok(Process {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr: tail,
            reaped: false,
        })
    }

    /// The program's stdin (interactive programs only).
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// The next line of stdout, waiting until `deadline`.
    pub fn next_line(&self, deadline: Instant) -> Result<String, Silence> {
        let mut pending = self.stdout.pending();
        loop {
            if let Some(line) = pending.lines.pop_front() {
                pending.bytes -= line.len();
                return Ok(line);
            }
            if pending.closed {
                return Err(Silence::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Silence::Timeout);
            }
            pending = self
                .stdout
                .ready
                .wait_timeout(pending, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Bytes of stdout dropped so far (lines cut at [`MAX_LINE_BYTES`], or older than the last
    /// [`MAX_PENDING_BYTES`]).
    pub fn dropped_stdout(&self) -> usize {
        self.stdout.pending().dropped
    }

    /// Waits until the program exits or `deadline` passes (then kills it: `None`).
    pub fn wait(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.mark_reaped();
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    /// Kills the program and everything it started, and reaps it.
    pub fn kill(&mut self) {
        // The program was spawned with process_group(0): its group id is its pid. Once it is
        // reaped the id may be reused, so a reaped program's group is left alone.
        if !self.reaped {
            interrupt::kill_group(self.child.id());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.mark_reaped();
    }

    fn mark_reaped(&mut self) {
        if !self.reaped {
            self.reaped = true;
            interrupt::unregister_group(self.child.id());
        }
    }

    /// Closes stdin (an interactive program's signal to exit), waits up to `grace`, then kills.
    pub fn shut_down(&mut self, grace: Duration) {
        self.stdin = None;
        if self.wait(Instant::now() + grace).is_none() {
            self.kill();
        }
    }

    /// The last part of what the program wrote to stderr, for failure reports.
    pub fn stderr_tail(&self) -> String {
        // The reader thread may still be copying the final bytes of an exited program.
        thread::sleep(Duration::from_millis(20));
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match self.child.try_wait() {
            Ok(None) => self.kill(),
            _ => self.mark_reaped(),
        }
    }
}

/// `reason`, followed by the program's stderr tail when it wrote any.
pub fn with_stderr(reason: String, process: &Process) -> String {
    let tail = process.stderr_tail();
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; stderr: {tail}")
    }
}

/// Describes how a program ended.
pub fn describe_exit(status: ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("was killed by signal {signal}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "exited abnormally".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(stdout: &Stdout) -> Vec<String> {
        stdout.pending().lines.drain(..).collect()
    }

    #[test]
    fn output_is_read_lossily_and_within_its_limits() {
        let stdout = Stdout::default();
        let mut bytes = b"\xff\xfe not UTF-8\r\n".to_vec();
        bytes.extend(vec![b'x'; MAX_LINE_BYTES + 10]);
        bytes.extend(b"\n{\"scores\": {\"loss\": 1}}");
        stdout.fill(&bytes[..]);
        let lines = drain(&stdout);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "\u{fffd}\u{fffd} not UTF-8");
        assert_eq!(lines[1].len(), MAX_LINE_BYTES, "a long line is cut");
        assert_eq!(
            super::super::reply::find_reply(&lines.join("\n")).map(|r| r.len()),
            Some(1),
            "the reply after garbage is still read"
        );
        assert_eq!(stdout.pending().dropped, 10);
        assert!(stdout.pending().closed);

        let flood = Stdout::default();
        let line = vec![b'y'; 1000];
        let mut bytes = Vec::new();
        for _ in 0..(MAX_PENDING_BYTES / 1000 + 100) {
            bytes.extend(&line);
            bytes.push(b'\n');
        }
        flood.fill(&bytes[..]);
        let pending = flood.pending();
        assert!(pending.bytes <= MAX_PENDING_BYTES);
        assert_eq!(
            pending.bytes + pending.dropped,
            bytes.len() - bytes.len() / 1001
        );
    }
}
