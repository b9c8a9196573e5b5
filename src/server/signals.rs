//! Process signals: waiting for them in the server, and sending them to a
//! running server for `--signal`.

use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};

use super::Server;

/// Wait for SIGINT or SIGTERM. SIGHUP (or, with `watch_config`, a change
/// to a configuration or TLS file) reloads the configuration through
/// `reload_options` (the file, then the command-line flags over it), which
/// must pass `Options::validate` before the server sees it; on any error
/// the running configuration stays as it is and the error is logged.
/// SIGUSR2 runs lame duck mode to its end, after which the caller shuts
/// the server down (as nats-server exits after lame duck mode); SIGTERM
/// is ignored meanwhile, SIGINT is not.
pub async fn wait_for_shutdown<F>(server: &Server, reload_options: F)
where
    F: Fn() -> Result<crate::config::Options, String>,
{
    let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut usr2)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut watch = ConfigWatch::new(&server.ctx.opts());
    loop {
        let every = server.ctx.opts().watch_config;
        tokio::select! {
            _ = int.recv() => { tracing::info!("Trapped \"interrupt\" signal"); return; }
            _ = term.recv() => { tracing::info!("Trapped \"terminated\" signal"); return; }
            _ = hup.recv() => {
                tracing::info!("Trapped \"hangup\" signal");
                reload(server, &reload_options);
                watch = ConfigWatch::new(&server.ctx.opts());
            }
            _ = tokio::time::sleep(every), if !every.is_zero() => {
                if watch.changed() {
                    tracing::info!("Configuration files changed: reloading");
                    reload(server, &reload_options);
                    // Also after a failed reload: the same broken file is
                    // reported once, not on every check.
                    watch = ConfigWatch::new(&server.ctx.opts());
                }
            }
            _ = usr2.recv() => {
                tracing::info!("Trapped \"user defined signal 2\" signal");
                // SIGINT still stops the server while lame duck mode runs;
                // SIGTERM does not, as in nats-server: Kubernetes sends it
                // right after a preStop hook (`--signal ldm=1`) returns,
                // and the drain must go on to its end.
                let ldm = server.lame_duck();
                tokio::pin!(ldm);
                loop {
                    tokio::select! {
                        _ = &mut ldm => return,
                        _ = int.recv() => return,
                        _ = term.recv() => tracing::info!(
                            "Trapped \"terminated\" signal: ignored, lame duck mode in progress"
                        ),
                        _ = hup.recv() => tracing::warn!("reload ignored in lame duck mode"),
                    }
                }
            }
            _ = server.ctx.shutdown.cancelled() => return,
        }
    }
}

/// Reload as SIGHUP does: the file and flags are loaded and validated
/// (`reload_options`, then `Server::reload`) before anything is applied,
/// so a bad file leaves the running configuration untouched.
fn reload<F>(server: &Server, reload_options: &F)
where
    F: Fn() -> Result<crate::config::Options, String>,
{
    let result = reload_options().and_then(|o| {
        let warnings = o.warnings.clone();
        server.reload(o).map(|()| warnings)
    });
    match result {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            tracing::info!("Reloaded server configuration");
        }
        Err(e) => {
            tracing::error!("Failed to reload server configuration, keeping the running one: {e}")
        }
    }
}

/// `watch_config`'s state: the files of the running configuration and
/// how they looked when it was loaded.
struct ConfigWatch {
    files: Vec<std::path::PathBuf>,
    seen: Vec<Option<FileStamp>>,
    /// A change seen at the last check, not yet applied.
    changing: Option<Vec<Option<FileStamp>>>,
}

impl ConfigWatch {
    fn new(opts: &crate::config::Options) -> ConfigWatch {
        let files = opts.watched_files();
        let seen = fingerprint(&files);
        ConfigWatch {
            files,
            seen,
            changing: None,
        }
    }

    /// One check: true once a change has stayed put for a whole interval,
    /// so a file caught half-written is not loaded (an empty file parses,
    /// as a server with no authentication).
    fn changed(&mut self) -> bool {
        let now = fingerprint(&self.files);
        if now == self.seen {
            self.changing = None;
            false
        } else if self.changing.as_ref() == Some(&now) {
            true
        } else {
            self.changing = Some(now);
            false
        }
    }
}

/// Device, inode, size, modification time (seconds, nanoseconds).
type FileStamp = (u64, u64, u64, i64, i64);

/// What `watch_config` compares: each file's device, inode, size and
/// modification time (None when it cannot be read). Following symlinks,
/// so a Kubernetes ConfigMap update (an atomic swap of the `..data` link)
/// shows as a new inode.
fn fingerprint(files: &[std::path::PathBuf]) -> Vec<Option<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// `--signal stop|quit|reopen|reload|ldm|term[=<pid or pid file>]`.
pub fn send(spec: &str, pid_file: Option<&Path>) -> Result<(), String> {
    let (name, target) = match spec.split_once('=') {
        Some((n, t)) => (n, Some(t)),
        None => (spec, None),
    };
    let sig = match name {
        "stop" => libc::SIGKILL,
        "quit" => libc::SIGINT,
        "term" => libc::SIGTERM,
        "reopen" => libc::SIGUSR1,
        "reload" => libc::SIGHUP,
        "ldm" => libc::SIGUSR2,
        _ => return Err(format!("unknown signal \"{name}\"")),
    };
    let pid = match target
        .map(str::to_string)
        .or_else(|| pid_file.map(|p| p.display().to_string()))
    {
        Some(t) => match t.parse::<i32>() {
            Ok(p) => p,
            Err(_) => std::fs::read_to_string(&t)
                .map_err(|e| format!("cannot read pid file {t}: {e}"))?
                .trim()
                .parse()
                .map_err(|_| format!("pid file {t} does not hold a pid"))?,
        },
        None => find_server_pid()?,
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        return Err(format!(
            "failed to signal pid {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The one running rnats-server other than us, by scanning /proc.
fn find_server_pid() -> Result<i32, String> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| e.to_string())?;
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm"))
            && comm.trim() == "rnats-server"
        {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => Err("no rnats-server process found".into()),
        many => Err(format!(
            "multiple rnats-server processes running ({many:?}): give one with --signal SIG=PID"
        )),
    }
}
