//! Parses one line a client typed into a [`Command`]. Pure.

/// What a line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Plain text for everyone else. `//text` sends the literal `/text`.
    Say(&'a str),
    Nick(&'a str),
    Who,
    Me(&'a str),
    /// `/quit` with an optional parting message.
    Quit(Option<&'a str>),
    Help,
    /// `/join #room` (the name is checked by the room directory).
    Join(&'a str),
    /// `/part`: back to the lobby.
    Part,
    Rooms,
    /// `/msg NAME text`.
    Msg {
        to: &'a str,
        text: &'a str,
    },
    /// `/op SECRET`.
    Op(&'a str),
    Kick {
        name: &'a str,
        reason: Option<&'a str>,
    },
    /// `/ban NAME [minutes]`; `None` is the default length.
    Ban {
        name: &'a str,
        minutes: Option<u32>,
    },
    Bans,
    Unban(&'a str),
    /// `/mute NAME [minutes]`; `Some(0)` lifts a mute.
    Mute {
        name: &'a str,
        minutes: Option<u32>,
    },
    Topic(&'a str),
    /// A known command used wrongly; the text is the usage line.
    Usage(&'static str),
    Unknown(&'a str),
}

/// Parse one sanitised line.
pub fn parse(line: &str) -> Command<'_> {
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line);
    };
    if rest.starts_with('/') {
        return Command::Say(rest);
    }
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg.trim()),
        None => (rest, ""),
    };
    match name.to_ascii_lowercase().as_str() {
        "nick" if arg.is_empty() => Command::Usage("usage: /nick NAME"),
        "nick" => Command::Nick(arg),
        "who" => Command::Who,
        "me" if arg.is_empty() => Command::Usage("usage: /me ACTION"),
        "me" => Command::Me(arg),
        "quit" => Command::Quit((!arg.is_empty()).then_some(arg)),
        "help" => Command::Help,
        "join" if arg.is_empty() => Command::Usage("usage: /join #ROOM"),
        "join" => Command::Join(arg),
        "part" => Command::Part,
        "rooms" => Command::Rooms,
        "msg" => match split_word(arg) {
            (to, Some(text)) => Command::Msg { to, text },
            _ => Command::Usage("usage: /msg NAME TEXT"),
        },
        "op" if arg.is_empty() => Command::Usage("usage: /op SECRET"),
        "op" => Command::Op(arg),
        "kick" if arg.is_empty() => Command::Usage("usage: /kick NAME [REASON]"),
        "kick" => {
            let (name, reason) = split_word(arg);
            Command::Kick { name, reason }
        }
        "ban" => match name_and_minutes(arg) {
            Some((name, minutes)) => Command::Ban { name, minutes },
            None => Command::Usage("usage: /ban NAME [MINUTES]"),
        },
        "bans" => Command::Bans,
        "unban" if arg.is_empty() => Command::Usage("usage: /unban ADDRESS"),
        "unban" => Command::Unban(arg),
        "mute" => match name_and_minutes(arg) {
            Some((name, minutes)) => Command::Mute { name, minutes },
            None => Command::Usage("usage: /mute NAME [MINUTES] (0 lifts it)"),
        },
        "topic" if arg.is_empty() => Command::Usage("usage: /topic TEXT"),
        "topic" => Command::Topic(arg),
        _ => Command::Unknown(name),
    }
}

/// The first word, and the trimmed rest if there is any.
fn split_word(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once(char::is_whitespace) {
        Some((word, rest)) if !rest.trim().is_empty() => (word, Some(rest.trim())),
        Some((word, _)) => (word, None),
        None => (arg, None),
    }
}

/// `NAME [MINUTES]`: a name, then nothing or a whole number of minutes.
fn name_and_minutes(arg: &str) -> Option<(&str, Option<u32>)> {
    match split_word(arg) {
        ("", _) => None,
        (name, None) => Some((name, None)),
        (name, Some(minutes)) => Some((name, Some(minutes.parse().ok()?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_escaped_slash() {
        assert_eq!(parse("hello"), Command::Say("hello"));
        assert_eq!(parse("//shrug"), Command::Say("/shrug"));
    }

    #[test]
    fn commands_with_arguments() {
        assert_eq!(parse("/nick  alice "), Command::Nick("alice"));
        assert_eq!(parse("/NICK bob"), Command::Nick("bob"));
        assert_eq!(parse("/me waves hello"), Command::Me("waves hello"));
        assert_eq!(parse("/quit"), Command::Quit(None));
        assert_eq!(parse("/quit see you"), Command::Quit(Some("see you")));
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/help"), Command::Help);
    }

    #[test]
    fn missing_arguments_and_unknown_commands() {
        assert_eq!(parse("/nick"), Command::Usage("usage: /nick NAME"));
        assert_eq!(parse("/me "), Command::Usage("usage: /me ACTION"));
        assert_eq!(parse("/dance now"), Command::Unknown("dance"));
        assert_eq!(parse("/"), Command::Unknown(""));
    }

    #[test]
    fn room_and_message_commands() {
        assert_eq!(parse("/join #rust"), Command::Join("#rust"));
        assert_eq!(parse("/join"), Command::Usage("usage: /join #ROOM"));
        assert_eq!(parse("/PART"), Command::Part);
        assert_eq!(parse("/rooms"), Command::Rooms);
        assert_eq!(
            parse("/msg bob  hi there "),
            Command::Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(parse("/msg bob"), Command::Usage("usage: /msg NAME TEXT"));
        assert_eq!(parse("/msg"), Command::Usage("usage: /msg NAME TEXT"));
    }

    #[test]
    fn moderation_commands() {
        assert_eq!(parse("/op s3cret"), Command::Op("s3cret"));
        assert_eq!(
            parse("/kick bob spamming links"),
            Command::Kick {
                name: "bob",
                reason: Some("spamming links")
            }
        );
        assert_eq!(
            parse("/kick bob"),
            Command::Kick {
                name: "bob",
                reason: None
            }
        );
        assert_eq!(
            parse("/ban bob 15"),
            Command::Ban {
                name: "bob",
                minutes: Some(15)
            }
        );
        assert_eq!(
            parse("/ban bob"),
            Command::Ban {
                name: "bob",
                minutes: None
            }
        );
        assert_eq!(
            parse("/ban bob soon"),
            Command::Usage("usage: /ban NAME [MINUTES]")
        );
        assert_eq!(parse("/ban"), Command::Usage("usage: /ban NAME [MINUTES]"));
        assert_eq!(
            parse("/mute bob 0"),
            Command::Mute {
                name: "bob",
                minutes: Some(0)
            }
        );
        assert_eq!(parse("/bans"), Command::Bans);
        assert_eq!(parse("/unban 127.0.0.2"), Command::Unban("127.0.0.2"));
        assert_eq!(parse("/topic Rust, mostly"), Command::Topic("Rust, mostly"));
        assert_eq!(parse("/topic"), Command::Usage("usage: /topic TEXT"));
    }
}
