//! The serial line to one radio: opened raw at the configured baud rate
//! on a thread of its own that turns bytes into frames and hands them on.
//! When the port goes away (the dongle unplugged, the pty closed) the
//! thread says so and opens it again with doubling backoff.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::slip::{FrameError, Framing, Slip};

/// What the line thread reports.
#[derive(Debug)]
pub enum LineEvent {
    Opened(Writer),
    Frame(Result<Vec<u8>, FrameError>),
    Closed(String),
}

/// Sends frames to the radio; shared by the actor's handlers.
#[derive(Debug, Clone)]
pub struct Writer {
    file: Arc<Mutex<File>>,
}

impl Writer {
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let bytes = Slip::default().encode(frame);
        self.file.lock().write_all(&bytes)
    }
}

/// Opens `path` raw at `baud`.
fn open(path: &Path, baud: u32) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the whole
    // block; termios is plain data filled in by tcgetattr.
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut termios) == 0 {
            libc::cfmakeraw(&mut termios);
            let speed = baud_constant(baud);
            libc::cfsetispeed(&mut termios, speed);
            libc::cfsetospeed(&mut termios, speed);
            termios.c_cc[libc::VMIN] = 1;
            termios.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(fd, libc::TCSANOW, &termios) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // Not a terminal (a plain file or FIFO): use it as it is.
    }
    Ok(file)
}

fn baud_constant(baud: u32) -> libc::speed_t {
    match baud {
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        1000000 => libc::B1000000,
        _ => libc::B115200,
    }
}

/// Runs the line for the life of the process, reporting to `report`
/// until it returns `false` (the adapter is gone).
pub fn spawn(
    name: String,
    path: PathBuf,
    baud: u32,
    report: impl Fn(LineEvent) -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("radio-{name}"))
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            loop {
                match open(&path, baud) {
                    Ok(file) => {
                        backoff = Duration::from_millis(100);
                        let writer = match file.try_clone() {
                            Ok(clone) => Writer {
                                file: Arc::new(Mutex::new(clone)),
                            },
                            Err(error) => {
                                if !report(LineEvent::Closed(error.to_string())) {
                                    return;
                                }
                                continue;
                            }
                        };
                        if !report(LineEvent::Opened(writer)) {
                            return;
                        }
                        let reason = read(file, &report);
                        match reason {
                            Some(reason) => {
                                if !report(LineEvent::Closed(reason)) {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                    Err(error) => {
                        tracing::debug!(path = %path.display(), %error, "radio port not there");
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })?;
    Ok(())
}

/// Reads frames until the line fails: why, or `None` if the adapter went.
fn read(mut file: File, report: &impl Fn(LineEvent) -> bool) -> Option<String> {
    let mut slip = Slip::default();
    let mut buffer = [0u8; 4096];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some("end of file".into()),
            Ok(n) => {
                for frame in slip.decode(&buffer[..n]) {
                    if !report(LineEvent::Frame(frame)) {
                        return None;
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Some(error.to_string()),
        }
    }
}
