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
        _ => Command::Unknown(name),
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
}
