//! `pollchat quiz` refuses a bad or missing question file before it binds:
//! one line on stderr naming the file and the problem, exit status 2.

use std::process::Command;

/// Run `pollchat quiz --questions path` and return (exit code, stderr).
/// The port given is one this test holds, so if the file were wrongly
/// accepted the server would fail to bind instead of running on.
fn quiz_with(path: &std::path::Path) -> (Option<i32>, String) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_pollchat"))
        .args([
            "quiz",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--questions",
        ])
        .arg(path)
        .output()
        .expect("run pollchat");
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A file that does not exist.
#[test]
fn a_missing_question_file_exits_2_naming_it() {
    let path = std::env::temp_dir().join("pollchat-no-such-quiz.toml");
    let (code, stderr) = quiz_with(&path);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "pollchat: cannot read question file {}: ",
            path.display()
        )),
        "{stderr}"
    );
}

/// A file whose second question has a bad answer letter.
#[test]
fn an_invalid_question_file_exits_2_naming_file_and_question() {
    let path = std::env::temp_dir().join(format!("pollchat-bad-quiz-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[question]]\ntext = \"a\"\nchoices = [\"x\", \"y\"]\nanswer = \"a\"\n\n\
         [[question]]\ntext = \"b\"\nchoices = [\"x\", \"y\"]\nanswer = \"z\"\n",
    )
    .unwrap();
    let (code, stderr) = quiz_with(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!(
            "pollchat: {}: question 2 (line 6): answer \"z\" is not the letter of a choice (a-b)\n",
            path.display()
        )
    );
}
