//! The question file: TOML in, checked [`Question`]s out, or an error that
//! names the file, the question and what is wrong. Pure apart from
//! [`load`], which reads the file.
//!
//! ```toml
//! [[question]]
//! text = "What is the Italian word for pie?"
//! choices = ["Mozzarella", "Pasty", "Patty", "Pizza"]
//! answer = "d"          # the letter of the right choice
//! ```
//!
//! Parsing runs in two stages so every error can say where it is: the toml
//! crate first checks the syntax and splits the file into question tables
//! (remembering where each starts), then each table is read on its own, so
//! a missing or mistyped field is reported with its question's number.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::Deserialize;

use crate::sanitize::sanitize;

/// The built-in set, played when no `--questions` file is given.
const BUILTIN: &str = include_str!("builtin.toml");

/// How many choices a question may offer: at least a real choice, and no
/// more than fit on a screen as `a)` to `f)`.
pub const CHOICES: RangeInclusive<usize> = 2..=6;

/// The longest question text or choice, in bytes. `* You answered b) ...`
/// echoes a choice to one player, so it must stay far under
/// [`MAX_REPLY`](crate::app::MAX_REPLY); a whole question (text and six
/// choices) stays under 8 KiB.
pub const MAX_TEXT: usize = 1024;

/// One checked question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// One line of plain text.
    pub text: String,
    /// Between 2 and 6 one-line choices, shown as `a)`, `b)`, ...
    pub choices: Vec<String>,
    /// Index into `choices` of the right one.
    pub answer: usize,
}

impl Question {
    /// The letter players type for choice `index` (`0` is `a`).
    pub fn letter(index: usize) -> char {
        char::from(b'a' + index as u8)
    }

    /// The index of the choice a letter names, any case; `None` if the
    /// letter is not one of this question's choices.
    pub fn choice_for(&self, letter: char) -> Option<usize> {
        let letter = letter.to_ascii_lowercase();
        if !letter.is_ascii_lowercase() {
            return None;
        }
        let index = usize::from(letter as u8 - b'a');
        (index < self.choices.len()).then_some(index)
    }

    /// The last letter on offer, for error messages (`a-d`).
    pub fn last_letter(&self) -> char {
        Self::letter(self.choices.len() - 1)
    }
}

/// Why a question file was refused. `Display` is the whole message.
#[derive(Debug)]
pub struct QuestionFileError {
    /// The path as the user gave it (or `built-in questions`).
    pub file: String,
    pub problem: Problem,
}

/// What is wrong with a question file.
#[derive(Debug)]
pub enum Problem {
    /// The file could not be read (missing, a directory, no permission).
    Unreadable(std::io::Error),
    /// The TOML itself is broken, or the top level has a key other than
    /// `question`. Line and column are 1-based; `question` is the number
    /// of the question being read, if the error is inside one.
    Syntax {
        line: usize,
        column: usize,
        question: Option<usize>,
        message: String,
    },
    /// The file holds no `[[question]]` tables.
    NoQuestions,
    /// One question is wrong; `number` counts from 1, `line` is where it
    /// starts.
    Question {
        number: usize,
        line: usize,
        fault: Fault,
    },
}

/// What is wrong with one question.
#[derive(Debug, PartialEq, Eq)]
pub enum Fault {
    /// A field is missing, unknown or of the wrong type (serde's words).
    Shape(String),
    EmptyText,
    /// Text or a choice holds a line break or a control character.
    NotPlainText {
        field: String,
    },
    EmptyChoice(char),
    /// Text or a choice is over [`MAX_TEXT`] bytes.
    TooLong {
        field: String,
    },
    ChoiceCount(usize),
    /// `answer` is not the letter of one of the choices.
    BadAnswer {
        given: String,
        last: char,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Shape(message) => f.write_str(message),
            Fault::EmptyText => f.write_str("text is empty"),
            Fault::NotPlainText { field } => {
                write!(f, "{field} must be one line of plain text")
            }
            Fault::EmptyChoice(letter) => write!(f, "choice {letter} is empty"),
            Fault::TooLong { field } => write!(f, "{field} is longer than {MAX_TEXT} bytes"),
            Fault::ChoiceCount(n) => write!(
                f,
                "needs {} to {} choices, has {n}",
                CHOICES.start(),
                CHOICES.end()
            ),
            Fault::BadAnswer { given, last } => {
                write!(
                    f,
                    "answer {given:?} is not the letter of a choice (a-{last})"
                )
            }
        }
    }
}

impl fmt::Display for QuestionFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = &self.file;
        match &self.problem {
            Problem::Unreadable(e) => write!(f, "cannot read question file {file}: {e}"),
            Problem::Syntax {
                line,
                column,
                question: Some(number),
                message,
            } => write!(
                f,
                "{file}: question {number} (line {line}, column {column}): {message}"
            ),
            Problem::Syntax {
                line,
                column,
                question: None,
                message,
            } => write!(f, "{file}: line {line}, column {column}: {message}"),
            Problem::NoQuestions => write!(f, "{file}: no questions (add [[question]] tables)"),
            Problem::Question {
                number,
                line,
                fault,
            } => write!(f, "{file}: question {number} (line {line}): {fault}"),
        }
    }
}

impl std::error::Error for QuestionFileError {}

/// The file's top level: only `question` is allowed, so a typo such as
/// `[[questions]]` is an error rather than an empty quiz.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    question: Vec<toml::Spanned<toml::Table>>,
}

/// One question as written, before its values are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuestion {
    text: String,
    choices: Vec<String>,
    answer: String,
}

/// Read and check a question file.
pub fn load(path: &Path) -> Result<Vec<Question>, QuestionFileError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => parse(&source, &file),
        Err(e) => Err(QuestionFileError {
            file,
            problem: Problem::Unreadable(e),
        }),
    }
}

/// The questions compiled into the binary.
pub fn builtin() -> Vec<Question> {
    parse(BUILTIN, "built-in questions").expect("the built-in questions are valid (tested)")
}

/// Check `source`; `file` names it in errors.
pub fn parse(source: &str, file: &str) -> Result<Vec<Question>, QuestionFileError> {
    let error = |problem| QuestionFileError {
        file: file.to_string(),
        problem,
    };
    let shape: FileShape = toml::from_str(source).map_err(|e| error(syntax_problem(source, &e)))?;
    if shape.question.is_empty() {
        return Err(error(Problem::NoQuestions));
    }
    shape
        .question
        .into_iter()
        .enumerate()
        .map(|(i, table)| {
            let line = line_column(source, table.span().start).0;
            check(table.into_inner()).map_err(|fault| {
                error(Problem::Question {
                    number: i + 1,
                    line,
                    fault,
                })
            })
        })
        .collect()
}

/// Read one question table and check its values.
fn check(table: toml::Table) -> Result<Question, Fault> {
    let raw: RawQuestion = table
        .try_into()
        .map_err(|e: toml::de::Error| Fault::Shape(e.message().to_string()))?;
    if raw.text.trim().is_empty() {
        return Err(Fault::EmptyText);
    }
    plain_text(&raw.text, "text")?;
    if !CHOICES.contains(&raw.choices.len()) {
        return Err(Fault::ChoiceCount(raw.choices.len()));
    }
    for (i, choice) in raw.choices.iter().enumerate() {
        let letter = Question::letter(i);
        if choice.trim().is_empty() {
            return Err(Fault::EmptyChoice(letter));
        }
        plain_text(choice, &format!("choice {letter}"))?;
    }
    let mut question = Question {
        text: raw.text,
        choices: raw.choices,
        answer: 0,
    };
    let mut letters = raw.answer.trim().chars();
    question.answer = match (letters.next(), letters.next()) {
        (Some(letter), None) => question.choice_for(letter),
        _ => None,
    }
    .ok_or_else(|| Fault::BadAnswer {
        given: raw.answer.clone(),
        last: question.last_letter(),
    })?;
    Ok(question)
}

/// Text shown to players must survive sanitising unchanged: one line, no
/// control characters; and at most [`MAX_TEXT`] bytes.
fn plain_text(text: &str, field: &str) -> Result<(), Fault> {
    if text.len() > MAX_TEXT {
        Err(Fault::TooLong {
            field: field.to_string(),
        })
    } else if sanitize(text.as_bytes()) == text {
        Ok(())
    } else {
        Err(Fault::NotPlainText {
            field: field.to_string(),
        })
    }
}

/// A toml error as a line, column and message, plus which question it is
/// in: the number of `[[question]]` headers before it.
fn syntax_problem(source: &str, e: &toml::de::Error) -> Problem {
    let offset = e.span().map_or(0, |span| span.start);
    let (line, column) = line_column(source, offset);
    let before = &source[..offset.min(source.len())];
    let headers = before.lines().filter(|l| is_question_header(l)).count();
    Problem::Syntax {
        line,
        column,
        question: (headers > 0).then_some(headers),
        message: e.message().to_string(),
    }
}

/// `[[question]]`, allowing spaces and a trailing comment.
fn is_question_header(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("[[") else {
        return false;
    };
    let Some((name, _)) = rest.split_once("]]") else {
        return false;
    };
    name.trim() == "question"
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[question]]
text = "What is the Italian word for pie?"
choices = ["Mozzarella", "Pasty", "Patty", "Pizza"]
answer = "d"          # the letter of the right choice

[[question]]
text = "Two?"
choices = ["yes", "no"]
answer = " A "
"#;

    /// The message for `source`, which must be refused.
    fn refusal(source: &str) -> String {
        parse(source, "q.toml").unwrap_err().to_string()
    }

    /// A file whose second question (at line 6) is `body`.
    fn second_question(body: &str) -> String {
        format!(
            "[[question]]\ntext = \"ok\"\nchoices = [\"x\", \"y\"]\nanswer = \"a\"\n\n[[question]]\n{body}\n"
        )
    }

    /// A second question with these fields must be refused with `fault`.
    #[track_caller]
    fn assert_fault(text: &str, choices: &str, answer: &str, fault: &str) {
        let body = format!("text = {text}\nchoices = {choices}\nanswer = {answer}");
        assert_eq!(
            refusal(&second_question(&body)),
            format!("q.toml: question 2 (line 6): {fault}")
        );
    }

    #[test]
    fn a_good_file_parses_with_answer_letters_any_case() {
        let questions = parse(GOOD, "q.toml").unwrap();
        assert_eq!(questions.len(), 2);
        assert_eq!(questions[0].text, "What is the Italian word for pie?");
        assert_eq!(questions[0].choices[3], "Pizza");
        assert_eq!(questions[0].answer, 3);
        assert_eq!(questions[1].answer, 0);
    }

    #[test]
    fn the_builtin_set_is_valid_and_has_at_least_12_questions() {
        let questions = parse(BUILTIN, "built-in questions").unwrap();
        assert!(questions.len() >= 12, "only {}", questions.len());
        assert_eq!(builtin(), questions);
    }

    #[test]
    fn choice_letters_map_both_ways() {
        let q = &parse(GOOD, "q.toml").unwrap()[0];
        assert_eq!(q.choice_for('B'), Some(1));
        assert_eq!(q.choice_for('d'), Some(3));
        assert_eq!(q.choice_for('e'), None);
        assert_eq!(q.choice_for('7'), None);
        assert_eq!(q.choice_for('é'), None);
        assert_eq!(Question::letter(2), 'c');
        assert_eq!(q.last_letter(), 'd');
    }

    #[test]
    fn a_missing_field_names_the_question_and_field() {
        let source = second_question("text = \"no answer\"\nchoices = [\"x\", \"y\"]");
        assert_eq!(
            refusal(&source),
            "q.toml: question 2 (line 6): missing field `answer`"
        );
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused() {
        let typo = second_question("text = \"t\"\nchoices = [\"x\", \"y\"]\nanwser = \"a\"");
        let message = refusal(&typo);
        assert!(
            message.starts_with("q.toml: question 2 (line 6): unknown field `anwser`"),
            "{message}"
        );
        assert_fault(
            "5",
            r#"["x", "y"]"#,
            r#""a""#,
            "invalid type: integer `5`, expected a string",
        );
    }

    #[test]
    fn a_bad_answer_letter_is_refused() {
        for answer in ["e", "ab", "", "1"] {
            assert_fault(
                r#""t""#,
                r#"["w", "x", "y", "z"]"#,
                &format!("{answer:?}"),
                &format!("answer {answer:?} is not the letter of a choice (a-d)"),
            );
        }
    }

    #[test]
    fn two_to_six_choices() {
        assert_fault(
            r#""t""#,
            r#"["x"]"#,
            r#""a""#,
            "needs 2 to 6 choices, has 1",
        );
        let seven = r#"["a", "b", "c", "d", "e", "f", "g"]"#;
        assert_fault(r#""t""#, seven, r#""a""#, "needs 2 to 6 choices, has 7");
        let six = second_question(
            "text = \"t\"\nchoices = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\nanswer = \"F\"",
        );
        assert_eq!(parse(&six, "q.toml").unwrap()[1].answer, 5);
    }

    #[test]
    fn empty_or_multi_line_text_is_refused() {
        let two = r#"["x", "y"]"#;
        assert_fault(r#""  ""#, two, r#""a""#, "text is empty");
        assert_fault(
            "\"\"\"one\ntwo\"\"\"",
            two,
            r#""a""#,
            "text must be one line of plain text",
        );
        assert_fault(
            r#""t""#,
            r#"["x", "\u001b[2J"]"#,
            r#""a""#,
            "choice b must be one line of plain text",
        );
        assert_fault(r#""t""#, r#"["x", ""]"#, r#""a""#, "choice b is empty");
    }

    /// Issue 11: a choice is echoed to its player, so none may be huge.
    #[test]
    fn text_or_a_choice_over_max_text_is_refused() {
        let long = format!("\"{}\"", "x".repeat(MAX_TEXT + 1));
        let two = r#"["x", "y"]"#;
        assert_fault(
            &long,
            two,
            r#""a""#,
            &format!("text is longer than {MAX_TEXT} bytes"),
        );
        assert_fault(
            r#""t""#,
            &format!("[\"x\", {long}]"),
            r#""a""#,
            &format!("choice b is longer than {MAX_TEXT} bytes"),
        );
        let longest = format!("\"{}\"", "é".repeat(MAX_TEXT / 2));
        let body = format!("text = {longest}\nchoices = [\"x\", {longest}]\nanswer = \"b\"");
        assert!(parse(&second_question(&body), "q.toml").is_ok());
    }

    #[test]
    fn no_questions_is_refused() {
        assert_eq!(
            refusal("# nothing here\n"),
            "q.toml: no questions (add [[question]] tables)"
        );
        assert_eq!(
            refusal("[[questions]]\ntext = \"t\"\n"),
            "q.toml: line 1, column 3: unknown field `questions`, expected `question`"
        );
    }

    #[test]
    fn a_syntax_error_keeps_line_column_and_question() {
        // The wording after the position is the toml crate's.
        let source = second_question("text = \"unterminated\nchoices = [\"x\", \"y\"]");
        let message = refusal(&source);
        assert!(
            message.starts_with("q.toml: question 2 (line 7, column 21): invalid basic string"),
            "{message}"
        );
        let message = refusal("text = = 1");
        assert!(
            message.starts_with("q.toml: line 1, column 8: extra `=`"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = load(Path::new("/nonexistent/quiz.toml")).unwrap_err();
        assert!(matches!(err.problem, Problem::Unreadable(_)));
        assert!(
            err.to_string()
                .starts_with("cannot read question file /nonexistent/quiz.toml: "),
            "{err}"
        );
    }
}
