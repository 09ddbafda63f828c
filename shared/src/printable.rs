//! Stored text on its way to a terminal or a log line.
//!
//! Names, notes and ids come from people and from other devices; a
//! hostile device can put anything in a dossier. Printed raw, an ESC
//! sequence would move the cursor, recolour or clear headquarters'
//! terminal or hide what follows, a line break would forge a line of a
//! table or a log, and a right-to-left override would show text reversed.
//! [`printable`] shows every such character as a visible escape instead.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls,
/// DEL, and Unicode's bidirectional embedding, override and isolate marks.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character shown as an escape (`\n`, `\t`,
/// `\u{1b}`, ...): one line, nothing a terminal acts on. Borrowed when
/// there is nothing to escape (almost always).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// An error and its causes on one line, `: `-separated, each said once: a
/// message that already quotes its cause (`#[error("…: {1}")]` with the
/// cause as `#[source]`) does not repeat it, and `context` (what the caller
/// was doing, which may be the first message itself) is not repeated
/// either.
pub fn error_chain(context: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !context.contains(&text) && !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        next = err.source();
    }
    let chain = said.join(": ");
    match (context.is_empty(), chain.is_empty()) {
        (true, _) => chain,
        (false, true) => context.to_string(),
        (false, false) => format!("{context}: {chain}"),
    }
}

#[cfg(test)]
mod tests {

    #[derive(Debug)]
    struct Cause;
    impl std::fmt::Display for Cause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the file exists")
        }
    }
    impl std::error::Error for Cause {}

    /// Quotes its cause in its message and names it as its source.
    #[derive(Debug)]
    struct Quoting(Cause);
    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "文件错误 `x`: {}", self.0)
        }
    }
    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        assert_eq!(
            error_chain("", &Quoting(Cause)),
            "文件错误 `x`: the file exists"
        );
        assert_eq!(error_chain("backup", &Cause), "backup: the file exists");
        assert_eq!(error_chain("the file exists", &Cause), "the file exists");
    }

    use super::*;

    #[test]
    fn controls_are_shown_not_acted_on() {
        assert!(matches!(printable("张三 ok"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ny\rz\t"), "x\\ny\\rz\\t");
        assert_eq!(printable("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert!(!printable("\u{7f}\u{0}").chars().any(|c| c.is_control()));
    }
}
