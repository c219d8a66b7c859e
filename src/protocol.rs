//! Every line the *engines* send on their own, in one place, so the poll and
//! threaded engines say exactly the same thing. Lines from the chat room
//! itself live in `chat/`.

/// Sent to a new connection when the server has `--max-clients` already.
pub const SERVER_FULL: &str = "! server full\n";
/// Sent to a new connection over `--max-per-ip` from its address.
pub const TOO_MANY_FROM_ADDRESS: &str = "! too many connections from your address\n";
/// Best-effort last words to a client whose queue passed `--sendq`.
pub const TOO_SLOW: &str = "! disconnected: too slow to read\n";
/// Sent before closing a client quiet for `--idle-timeout`.
pub const IDLE_TIMEOUT: &str = "! idle timeout\n";
/// Sent to everyone when the server is stopping.
pub const SHUTTING_DOWN: &str = "* server shutting down\n";

/// The error for a line over `--max-line`; the client stays connected.
pub fn line_too_long(max_line: usize) -> String {
    format!("! line too long (max {max_line} bytes)\n")
}
