//! The content type of a stored file: sniffed from its first bytes (`infer`'s
//! magic numbers) first, then guessed from the name (`mime_guess`), with a check
//! that text is not labelled as a binary media type by an ambiguous extension
//! (`.ts` is TypeScript far more often than an MPEG stream here).

/// The content type of a file whose first bytes are `head` and whose path is `path`.
pub fn content_type(head: &[u8], path: &str) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    let text = looks_like_text(head);
    match mime_guess::from_path(path).first_raw() {
        Some(guess) if text && binary_media(guess) => "text/plain".into(),
        Some(guess) if !text && guess.starts_with("text/") => "application/octet-stream".into(),
        Some(guess) => guess.to_string(),
        None if text => "text/plain".into(),
        None => "application/octet-stream".into(),
    }
}

fn binary_media(mime: &str) -> bool {
    let family = mime.split('/').next().unwrap_or("");
    matches!(family, "audio" | "video" | "image" | "font") && !mime.ends_with("+xml")
        || mime == "application/octet-stream"
}

/// UTF-8 without NUL; a character cut by the end of `head` is allowed.
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn bytes_win_over_names_and_text_is_text() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(content_type(png, "notes.txt"), "image/png");
        assert_eq!(content_type(b"%PDF-1.7\n", "x"), "application/pdf");
        assert_eq!(content_type(b"print(1)\n", "a.py"), "text/plain");
        assert_eq!(content_type(b"const a: number = 1;", "a.ts"), "text/plain");
        assert_eq!(content_type(b"{\"a\":1}", "a.json"), "application/json");
        assert_eq!(content_type(b"# Title", "README.md"), "text/markdown");
        assert_eq!(content_type(b"hello", "Makefile"), "text/plain");
        assert_eq!(
            content_type(b"\x00\x01\x02", "blob"),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(b"\xff\xfe\x00", "a.txt"),
            "application/octet-stream"
        );
        assert_eq!(
            content_type("caf\u{e9}".as_bytes()[..4].as_ref(), "a"),
            "text/plain"
        );
    }
}
