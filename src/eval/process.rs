//! Running external evaluator programs: spawned without a shell in a process group of their own
//! (so a timeout kills the program and everything it started), with stdout read line by line and
//! the tail of stderr kept for failure reports.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How much of a program's stderr a failure report quotes.
const STDERR_TAIL_BYTES: usize = 2000;

/// A running evaluator program.
pub struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<u8>>>,
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
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let keep = Arc::clone(&tail);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut tail = keep.lock().expect("stderr tail lock");
                tail.extend(&chunk[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                tail.drain(..excess);
            }
        });
        Ok(Process {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: tail,
        })
    }

    /// The program's stdin (interactive programs only).
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// The next line of stdout, waiting until `deadline`.
    pub fn next_line(&self, deadline: Instant) -> Result<String, Silence> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).map_err(|e| match e {
            RecvTimeoutError::Timeout => Silence::Timeout,
            RecvTimeoutError::Disconnected => Silence::Closed,
        })
    }

    /// Waits until the program exits or `deadline` passes (then kills it: `None`).
    pub fn wait(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
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
        #[cfg(unix)]
        // SAFETY: kill(2) on the process group this program leads (it was spawned with
        // process_group(0), so its group id is its pid); no memory is touched.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        let tail = self.stderr.lock().expect("stderr tail lock");
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
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
