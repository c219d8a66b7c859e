//! The client's event loop: one thread, one `mio::Poll` watching stdin, the
//! server socket and signals. The counterpart of `engine/poll.rs`, and the
//! `select()` chat client from the tutorials, done properly.
//!
//! Read `Session::run` top to bottom; each step is one small method below.
//! The rules it lives by:
//! - with nothing to do, `poll()` waits with no timeout: an idle client uses
//!   no CPU at all;
//! - the server socket is non-blocking; it is read until `WouldBlock` (at
//!   most `READS_PER_TICK` times before looking at stdin again) and written
//!   once per tick, with WRITABLE interest only while something waits;
//! - stdin stays *blocking*. Its O_NONBLOCK flag would be shared with the
//!   shell that started us (same open file), so we leave it alone and read
//!   exactly once per readiness event instead: that read cannot block, and
//!   re-registering stdin afterwards re-arms the edge-triggered event, so we
//!   hear again at once if more is waiting. Not re-arming is also how we
//!   stop reading while the server is slow to take what we send;
//! - stdin that epoll cannot watch (a regular file, `/dev/null`: `register`
//!   fails with EPERM) never makes a read wait, so it counts as always
//!   ready, and the loop polls with a zero timeout until it has been read;
//! - stdout is written with ordinary blocking writes: if whoever reads our
//!   output stops, we stop too, and TCP pushes back on the server;
//! - memory is bounded: a server line is cut at `MAX_SERVER_LINE`, and
//!   unsent input at `MAX_UNSENT`;
//! - over TLS (`--tls`) the socket is a [`Link`]: the handshake runs inside
//!   this loop like any other traffic (reads drive it, WRITABLE waits while
//!   its messages wait for room), bounded by `HANDSHAKE_TIMEOUT`. Typed
//!   lines wait in `unsent` until it is done, and "Connected" is said only
//!   then, so a refused certificate ends the session with one line. At the
//!   end, `close_notify` goes out before the FIN.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::address::ServerAddress;
use super::editor::{Edit, LineEditor, MAX_TYPED_LINE};
use super::link::Link;
use super::screen::{MAX_SERVER_LINE, Screen};
use super::terminal;
use super::unsent::Unsent;
use crate::chat::command::{self, Command};
use crate::framing::{Frame, LineFramer};

const STDIN: Token = Token(0);
const SERVER: Token = Token(1);
const SIGNALS: Token = Token(2);

/// One read buffer for both stdin and the socket.
const READ_CHUNK: usize = 64 * 1024;
/// Socket reads per tick before stdin gets a turn, even if the server keeps
/// sending; a cut-off read is resumed next tick without waiting for an event.
const READS_PER_TICK: usize = 16;
/// Input not yet taken by the socket. Past this we stop reading stdin until
/// the server catches up (a pasted block or a piped file meets a server that
/// reads slowly, e.g. under its flood control).
const MAX_UNSENT: usize = 256 * 1024;
/// Once input has ended: how long after the last byte we sent we still wait
/// for the server to close, printing what it sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most time a TLS handshake may take once connected: a server that
/// accepts but never answers (a wrong port, a stuck proxy) is given up on,
/// as the TCP connect is after `CONNECT_TIMEOUT`. The server's own default
/// deadline is the same 10 s.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the session ended; the caller turns it into an exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Input ended, everything was sent, and the server closed or the
    /// linger time passed.
    InputEnded,
    /// We sent `/quit` and the server closed, as asked.
    Quit,
    /// The server closed or reset the connection while we were still talking.
    Disconnected,
    /// A signal (SIGINT, SIGTERM, SIGHUP) or Ctrl-C at the prompt.
    Signal(i32),
    /// The TLS handshake failed (the reason, as one line: an untrusted or
    /// misnamed certificate, a server that does not speak TLS, a timeout).
    /// Nothing was exchanged: for the person this is a failed connect.
    HandshakeFailed(String),
}

/// Where stdin is in its life.
enum Input {
    /// A pipe, terminal or socket, registered with the Poll. `ready` is set
    /// by its event and cleared by the one read that follows.
    Watched { file: File, ready: bool },
    /// A regular file or `/dev/null`: epoll refuses them, but reading them
    /// never waits, so they are always ready.
    AlwaysReady(File),
    /// End of input (end of pipe or file, Ctrl-D, or a read error).
    Ended,
}

/// One connection to a chat server and everything the loop mutates.
pub struct Session {
    poll: Poll,
    /// The server socket, plain or with TLS in front.
    server: Link,
    /// The server as the person named it: its host is the name the
    /// certificate must carry.
    peer: ServerAddress,
    /// While a TLS handshake runs: when we give up on it. `None` once the
    /// session is up (and always, on plain TCP).
    handshake_until: Option<Instant>,
    signals: Signals,
    input: Input,
    /// The half-typed line when a person types at a terminal; `None` when
    /// input is piped (its lines are framed by `input_lines` instead).
    editor: Option<LineEditor>,
    /// Splits piped input into lines, so typed and piped lines take the
    /// same path to the server.
    input_lines: LineFramer,
    /// Splits what the server sends into lines, capped at `MAX_SERVER_LINE`.
    server_lines: LineFramer,
    screen: Screen,
    /// Bytes for the server not yet taken by the socket.
    unsent: Unsent,
    /// WRITABLE is part of the socket's registration.
    wants_write: bool,
    /// We ended our side (`close_notify` over TLS, then FIN) after input
    /// ended and everything was sent.
    write_shut: bool,
    /// A `/quit` went out, so the server closing is expected.
    quit_sent: bool,
    /// The socket read stopped at `READS_PER_TICK`: read again next tick.
    read_again: bool,
    /// After input ended: when we stop waiting for the server to close.
    linger_until: Option<Instant>,
    /// The shared read buffer (see `READ_CHUNK`).
    scratch: Vec<u8>,
}

impl Session {
    /// Register the connected socket, stdin and the signals with a new Poll.
    /// `interactive`: a person types at a terminal in key-at-a-time mode.
    /// `tls`: the session to run over the socket (handshake not begun);
    /// `peer` is the server as the person named it.
    pub fn new(
        stream: std::net::TcpStream,
        tls: Option<Box<crate::tls::Session>>,
        peer: ServerAddress,
        interactive: bool,
    ) -> io::Result<Session> {
        let poll = Poll::new()?;
        stream.set_nonblocking(true)?;
        // Chat lines are small and latency is what matters.
        stream.set_nodelay(true)?;
        let sock = TcpStream::from_std(stream);
        let mut server = match tls {
            Some(session) => Link::tls(sock, session),
            None => Link::plain(sock),
        };
        // Over TLS the ClientHello is already waiting: WRITABLE from the
        // start, so the first tick sends it (a fresh socket is writable at
        // once, and that edge is reported).
        let wants_write = server.wants_write();
        let interest = if wants_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry()
            .register(server.sock_mut(), SERVER, interest)?;
        let handshake_until = server
            .is_handshaking()
            .then(|| Instant::now() + HANDSHAKE_TIMEOUT);
        // Signals become readiness events in the same Poll, so the loop ends
        // normally and the terminal settings are restored.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let input = open_input(poll.registry())?;
        Ok(Session {
            poll,
            server,
            peer,
            handshake_until,
            signals,
            input,
            editor: interactive.then(LineEditor::new),
            input_lines: LineFramer::new(MAX_TYPED_LINE),
            server_lines: LineFramer::new(MAX_SERVER_LINE),
            screen: Screen::new(interactive),
            unsent: Unsent::default(),
            wants_write,
            write_shut: false,
            quit_sent: false,
            read_again: false,
            linger_until: None,
            scratch: vec![0; READ_CHUNK],
        })
    }

    /// Queue one line for the server (the `\n` is added here).
    pub fn send_line(&mut self, line: &[u8]) {
        if let Ok(text) = std::str::from_utf8(line)
            && matches!(command::parse(text), Command::Quit(_))
        {
            self.quit_sent = true;
        }
        self.unsent.push(line);
        self.unsent.push(b"\n");
    }

    /// The event loop. Each pass is one *tick*: wait → read the server →
    /// read stdin → write to the server → update the screen.
    pub fn run(mut self) -> io::Result<Ending> {
        if self.handshake_until.is_none() {
            self.say_connected();
        }
        let mut events = Events::with_capacity(8);
        let ending = loop {
            // Step 1: sleep until the server, stdin or a signal has news, or
            // the linger time is up. With nothing pending there is no
            // timeout at all.
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }

            // Step 2: note what is ready. Events for unknown tokens are
            // ignored ("sporadic events happen").
            let mut server_readable = std::mem::take(&mut self.read_again);
            let mut signal = None;
            for event in events.iter() {
                match event.token() {
                    STDIN => {
                        if let Input::Watched { ready, .. } = &mut self.input {
                            *ready = true;
                        }
                    }
                    SERVER => {
                        server_readable |=
                            event.is_readable() || event.is_read_closed() || event.is_error();
                    }
                    SIGNALS => signal = self.signals.pending().next(),
                    _ => {}
                }
            }
            if let Some(signal) = signal {
                break Ending::Signal(signal);
            }

            // Step 3: read what the server sent and queue each line for the
            // screen. A close ends the session, after its last lines shown.
            if server_readable && let Some(ending) = self.read_server() {
                break ending;
            }

            // Step 3b (TLS): the handshake finished during that read, or ran
            // out of time. Only now do we say we are connected.
            if let Some(until) = self.handshake_until {
                if !self.server.is_handshaking() {
                    self.handshake_until = None;
                    self.say_connected();
                    // Input that ended meanwhile lingers from now on.
                    if self.linger_until.is_some() {
                        self.linger_until = Some(Instant::now() + LINGER);
                    }
                } else if Instant::now() >= until {
                    break Ending::HandshakeFailed(format!(
                        "no TLS handshake within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ));
                }
            }

            // Step 4: read stdin once, if it is ready and the server is
            // keeping up; turn keys or piped bytes into lines to send.
            if let Some(ending) = self.read_input()? {
                break ending;
            }

            // Step 5: one write to the server. Once input has ended and all
            // of it is sent, end our side (`close_notify` over TLS, then
            // FIN): the server sees us leave but can still answer.
            if let Some(ending) = self.write_server()? {
                break ending;
            }

            // Step 6: one write to the screen, then the prompt redrawn.
            self.update_screen()?;

            // Step 7: input ended and the server said nothing more in time.
            // (Not while a TLS handshake runs: its own deadline bounds it,
            // and what input left is still to be sent.)
            if self.handshake_until.is_none()
                && self.linger_until.is_some_and(|at| Instant::now() >= at)
            {
                break Ending::InputEnded;
            }
        };
        // Show what is left and clear the prompt before the caller prints
        // its last message. (Dropping `self` closes the socket; over TLS it
        // first tries a `close_notify` if ours is not out yet: see `Link`.)
        self.input = Input::Ended;
        let _ = self.update_screen();
        Ok(ending)
    }

    /// The line that tells the person they are in (on stderr, like the
    /// other messages about the connection itself).
    fn say_connected(&self) {
        let over = if self.server.is_tls() {
            " over TLS"
        } else {
            ""
        };
        eprintln!(
            "Connected to {}{over}. Type /help for commands, Ctrl-D to quit.",
            self.peer
        );
    }

    /// Zero when work is waiting without an event (a cut-off socket read,
    /// stdin that is ready and has room); the linger deadline if any;
    /// otherwise none: sleep until an event.
    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.read_again || self.input_waiting() {
            return Some(Duration::ZERO);
        }
        [self.linger_until, self.handshake_until]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Stdin has something for us and the server is taking what we send.
    fn input_waiting(&self) -> bool {
        let ready = match &self.input {
            Input::Watched { ready, .. } => *ready,
            Input::AlwaysReady(_) => true,
            Input::Ended => false,
        };
        ready && self.unsent.pending() < MAX_UNSENT
    }

    // ----- the server ---------------------------------------------------------

    /// Read until `WouldBlock` (or the per-tick cap). Returns the ending if
    /// the server closed or reset the connection. Over TLS a read also
    /// drives the handshake and sends what it answers (the `Pipe` does);
    /// a failure there ends the session as a failed connect.
    fn read_server(&mut self) -> Option<Ending> {
        for _ in 0..READS_PER_TICK {
            match self.server.read(&mut self.scratch) {
                Ok(0) if self.server.is_handshaking() => {
                    return Some(Ending::HandshakeFailed(
                        "the server closed the connection during the TLS handshake".into(),
                    ));
                }
                // FIN (over TLS: `close_notify`, or a FIN without one, which
                // for a line protocol means the same): show a last line
                // that had no newline, then stop.
                Ok(0) => {
                    while let Some(frame) = self.server_lines.finish() {
                        show(&mut self.screen, frame);
                    }
                    return Some(self.server_gone());
                }
                Ok(n) => {
                    self.server_lines.push(&self.scratch[..n]);
                    while let Some(frame) = self.server_lines.next_frame() {
                        show(&mut self.screen, frame);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // Also the `Pipe` letting others have a turn after many
                // records with no plaintext (handshake messages).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.server.is_handshaking() => {
                    return Some(Ending::HandshakeFailed(super::tls::explain(
                        &e,
                        &self.peer.host,
                    )));
                }
                // Reset or another error: the connection is gone.
                Err(_) => return Some(self.server_gone()),
            }
        }
        self.read_again = true;
        None
    }

    /// The connection ended: expected after our input ended or `/quit`.
    fn server_gone(&self) -> Ending {
        if matches!(self.input, Input::Ended) {
            Ending::InputEnded
        } else if self.quit_sent {
            Ending::Quit
        } else {
            Ending::Disconnected
        }
    }

    /// One write of what is queued; WRITABLE interest only while something
    /// is left (our lines, or TLS records the socket had no room for); the
    /// end of our side once input has ended and nothing is left.
    fn write_server(&mut self) -> io::Result<Option<Ending>> {
        let handshaking = self.server.is_handshaking();
        // TLS records that did not fit last time (handshake messages, the
        // tail of a line) go first; they are already in order.
        if self.server.wants_write() && self.server.flush().is_err() {
            return Ok(Some(self.server_gone()));
        }
        // Our lines wait while the handshake runs: rustls would buffer them,
        // but `unsent` is where the bound (`MAX_UNSENT`) is kept.
        if self.unsent.pending() > 0 && !handshaking {
            match self.unsent.write_to(&mut self.server) {
                // The socket is full (WouldBlock): try again when writable.
                Ok(0) => {}
                // Progress: the server is still taking input, so the
                // linger time counts from here.
                Ok(_) => {
                    if self.linger_until.is_some() {
                        self.linger_until = Some(Instant::now() + LINGER);
                    }
                }
                // Broken pipe or reset: the server has gone.
                Err(_) => return Ok(Some(self.server_gone())),
            }
        }
        let lines_left = self.unsent.pending() > 0;
        if !lines_left && !handshaking && matches!(self.input, Input::Ended) && !self.write_shut {
            match self.server.finish() {
                Ok(done) => self.write_shut = done,
                Err(_) => return Ok(Some(self.server_gone())),
            }
        }
        let pending = (lines_left && !handshaking) || self.server.wants_write();
        if pending != self.wants_write {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            self.poll
                .registry()
                .reregister(self.server.sock_mut(), SERVER, interest)?;
            self.wants_write = pending;
        }
        Ok(None)
    }

    // ----- stdin ------------------------------------------------------------

    /// One read of stdin, if it is ready and we have room. Typed keys go to
    /// the line editor, piped bytes to the line framer; either way complete
    /// lines are queued for the server.
    fn read_input(&mut self) -> io::Result<Option<Ending>> {
        if !self.input_waiting() {
            return Ok(None);
        }
        let file = match &mut self.input {
            Input::Watched { file, .. } | Input::AlwaysReady(file) => file,
            Input::Ended => return Ok(None),
        };
        let read = loop {
            match file.read(&mut self.scratch) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match read {
            Ok(0) => return Ok(self.end_input()),
            Ok(n) => n,
            Err(e) => {
                eprintln!("pollchat: cannot read input ({e}); no more input");
                return Ok(self.end_input());
            }
        };
        // Re-arm: if more is waiting, the Poll reports stdin again at once.
        if let Input::Watched { file, ready } = &mut self.input {
            *ready = false;
            self.poll.registry().reregister(
                &mut SourceFd(&file.as_raw_fd()),
                STDIN,
                Interest::READABLE,
            )?;
        }
        let chunk = std::mem::take(&mut self.scratch);
        let ending = if self.editor.is_some() {
            self.handle_keys(&chunk[..n])
        } else {
            self.handle_piped(&chunk[..n]);
            None
        };
        self.scratch = chunk;
        Ok(ending)
    }

    /// Keys typed at the terminal: edit the line, send it on Enter.
    fn handle_keys(&mut self, keys: &[u8]) -> Option<Ending> {
        let mut edits = Vec::new();
        if let Some(editor) = self.editor.as_mut() {
            editor.feed(keys, &mut edits);
        }
        self.screen.typing_changed();
        for edit in edits {
            match edit {
                Edit::Submit(line) if line.is_empty() => {}
                Edit::Submit(line) => {
                    self.screen.sent_line(&line);
                    self.send_line(line.as_bytes());
                }
                Edit::EndOfInput => return self.end_input(),
                Edit::Interrupt => return Some(Ending::Signal(SIGINT)),
            }
        }
        None
    }

    /// Bytes from a pipe or file: send each complete line.
    fn handle_piped(&mut self, bytes: &[u8]) {
        self.input_lines.push(bytes);
        while let Some(frame) = self.input_lines.next_frame() {
            self.send_frame(frame);
        }
    }

    /// A piped line over `MAX_TYPED_LINE` is sent cut; the server will
    /// refuse it as too long anyway, with its own message.
    fn send_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Line(line) | Frame::TooLong(line) => self.send_line(&line),
        }
    }

    /// Input is over: send a last line that had no newline, stop watching
    /// stdin, and start the linger clock. What is queued still goes out.
    fn end_input(&mut self) -> Option<Ending> {
        while let Some(frame) = self.input_lines.finish() {
            self.send_frame(frame);
        }
        if let Input::Watched { file, .. } = &self.input {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&file.as_raw_fd()));
        }
        self.input = Input::Ended;
        self.linger_until = Some(Instant::now() + LINGER);
        None
    }

    // ----- the screen -------------------------------------------------------

    fn update_screen(&mut self) -> io::Result<()> {
        // Nothing is drawn before we are connected (over TLS, until the
        // handshake is done): keys are kept and shown with the prompt then.
        if self.handshake_until.is_some() {
            return Ok(());
        }
        let typing = match (&self.input, &self.editor) {
            (Input::Ended, _) | (_, None) => None,
            (_, Some(editor)) => Some(editor.line()),
        };
        let columns = match typing {
            Some(_) => terminal::columns(),
            None => 0,
        };
        self.screen.flush(&mut io::stdout().lock(), typing, columns)
    }
}

/// One framed server line to the screen.
fn show(screen: &mut Screen, frame: Frame) {
    match frame {
        Frame::Line(line) => screen.server_line(&line),
        Frame::TooLong(head) => screen.server_line_cut(&head),
    }
}

/// Stdin as a `File` we read ourselves (a duplicate of fd 0, so std's
/// buffered `Stdin` never holds bytes the Poll cannot see), registered if
/// epoll can watch it.
fn open_input(registry: &Registry) -> io::Result<Input> {
    let Ok(fd) = io::stdin().as_fd().try_clone_to_owned() else {
        // No stdin at all (fd 0 closed): nothing to send.
        return Ok(Input::Ended);
    };
    let file = File::from(fd);
    match registry.register(&mut SourceFd(&file.as_raw_fd()), STDIN, Interest::READABLE) {
        Ok(()) => Ok(Input::Watched { file, ready: false }),
        // EPERM: a regular file or /dev/null. Reads never wait on those.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(Input::AlwaysReady(file)),
        Err(e) => Err(e),
    }
}
