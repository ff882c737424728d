//! Names people give things, checked in one place: uploaded files' names and
//! documents' names ([`safe_name`]: one safe path component, as the workspace's
//! `uploads/` directory needs), and conversations' titles ([`title`]).
//!
//! Refused everywhere (nothing is stored), with the same messages: an empty
//! name, and any control character (NUL, newline, …) or bidirectional override
//! (which can disguise an extension or reorder what is shown). File names also
//! refuse a path separator (`/`, `\`), `.` and `..`. Accepted names are Unicode
//! normalised (NFC) and trimmed; file names are capped at [`MAX_NAME_BYTES`],
//! keeping the extension, and titles refused past [`MAX_TITLE_CHARS`]. A file
//! name already taken becomes `name (1).ext`, `name (2).ext`, ….

use unicode_normalization::UnicodeNormalization;

/// Longest name kept, in bytes (room is left for a ` (NNN)` suffix within the
/// 255 bytes a file name may have).
pub const MAX_NAME_BYTES: usize = 200;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Longest extension kept whole when a long name is cut.
const MAX_EXTENSION_BYTES: usize = 16;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No name, or only spaces.
    #[error("a name may not be empty")]
    Empty,
    /// `/` or `\` in the name.
    #[error("file names may not contain / or \\")]
    Separator,
    /// `.` or `..`.
    #[error("`.` and `..` are not file names")]
    Dots,
    /// A control character or a bidirectional override.
    #[error("names may not contain control characters or bidirectional overrides")]
    Control,
    /// A title longer than [`MAX_TITLE_CHARS`].
    #[error("a title may be at most {MAX_TITLE_CHARS} characters")]
    TooLong,
}

/// The safe file name of `raw` (uploads, documents), or why there is none.
pub fn safe_name(raw: &str) -> Result<String, NameError> {
    let name = text(raw)?;
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    Ok(cap(&name))
}

/// The title `raw` (a conversation's), or why it is refused.
pub fn title(raw: &str) -> Result<String, NameError> {
    let title = text(raw)?;
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(NameError::TooLong);
    }
    Ok(title)
}

/// `raw` normalised and trimmed; refused when empty or with a control character
/// or bidirectional override.
fn text(raw: &str) -> Result<String, NameError> {
    let normal: String = raw.nfc().collect();
    let name = normal.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(NameError::Control);
    }
    Ok(name.to_string())
}

/// `name` with ` (n)` before its extension; `name` itself for 0.
pub fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_string();
    }
    let (stem, ext) = split_extension(name);
    format!("{stem} ({n}){ext}")
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `(stem, ".ext")`; a leading dot (`.bashrc`) is part of the stem.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= MAX_EXTENSION_BYTES => name.split_at(i),
        _ => (name, ""),
    }
}

/// Cuts `name` to [`MAX_NAME_BYTES`] on a character boundary, keeping its extension.
fn cap(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_string();
    }
    let (stem, ext) = split_extension(name);
    let mut end = MAX_NAME_BYTES - ext.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", stem[..end].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for (raw, why) in [
            ("../../etc/passwd", NameError::Separator),
            ("a/b", NameError::Separator),
            ("..\\x", NameError::Separator),
            ("..", NameError::Dots),
            (".", NameError::Dots),
            (" .. ", NameError::Dots),
            ("", NameError::Empty),
            ("   ", NameError::Empty),
            ("a\0b", NameError::Control),
            ("a\nb", NameError::Control),
            ("a\rb", NameError::Control),
            ("invoice\u{202E}fdp.exe", NameError::Control),
        ] {
            assert_eq!(safe_name(raw), Err(why), "{raw:?}");
        }
    }

    #[test]
    fn titles_refuse_what_names_refuse_but_may_hold_slashes() {
        assert_eq!(title(" Q3 / Q4 plan ").as_deref(), Ok("Q3 / Q4 plan"));
        assert_eq!(title("a\u{202E}b"), Err(NameError::Control));
        assert_eq!(title("a\u{2067}b"), Err(NameError::Control));
        assert_eq!(title("  "), Err(NameError::Empty));
        assert_eq!(
            title(&"x".repeat(MAX_TITLE_CHARS + 1)),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn ordinary_names_stay_and_unicode_is_normalised() {
        assert_eq!(safe_name("report.pdf").as_deref(), Ok("report.pdf"));
        assert_eq!(safe_name(" notes.txt ").as_deref(), Ok("notes.txt"));
        assert_eq!(safe_name(".bashrc").as_deref(), Ok(".bashrc"));
        assert_eq!(safe_name("a..b").as_deref(), Ok("a..b"));
        // "e" + combining acute accent becomes the single precomposed "é".
        assert_eq!(
            safe_name("re\u{301}sume\u{301}.txt").as_deref(),
            Ok("résumé.txt")
        );
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary_keeping_the_extension() {
        let long = format!("{}.csv", "é".repeat(300));
        let safe = safe_name(&long).expect("accepted");
        assert!(safe.len() <= MAX_NAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with("é.csv"), "{safe}");
        let no_ext = "x".repeat(1000);
        assert_eq!(safe_name(&no_ext).expect("accepted").len(), MAX_NAME_BYTES);
    }

    #[test]
    fn clashes_get_a_number_before_the_extension() {
        assert_eq!(numbered("report.pdf", 0), "report.pdf");
        assert_eq!(numbered("report.pdf", 2), "report (2).pdf");
        assert_eq!(numbered("Makefile", 1), "Makefile (1)");
        assert_eq!(numbered(".bashrc", 1), ".bashrc (1)");
        assert_eq!(numbered("archive.tar.gz", 1), "archive.tar (1).gz");
    }
}
