//! Cuts a streaming answer into sentences to speak, as the text arrives.
//!
//! Pure: deltas in, cleaned sentences out. A sentence ends at `.` `!` `?` `…`
//! (plus closing quotes or brackets) followed by whitespace, or at a line break.
//! Fenced code blocks are not read: each becomes "Code omitted.". Markdown
//! symbols (emphasis, headings, list markers, link targets, inline code ticks,
//! table pipes) are dropped and bare URLs become "a link", so the speech engine
//! reads words, not punctuation. What the speaking does with the sentences is
//! `speaker`'s business.

/// What a fenced code block is spoken as.
pub const CODE_OMITTED: &str = "Code omitted.";

/// The splitter's state for one answer.
#[derive(Debug)]
pub struct Sentences {
    pending: String,
    in_code: bool,
    at_line_start: bool,
}

impl Default for Sentences {
    fn default() -> Self {
        Self {
            pending: String::new(),
            in_code: false,
            at_line_start: true,
        }
    }
}

impl Sentences {
    /// A splitter at the start of an answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a delta; returns the sentences it completed, cleaned, in order.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.pending.push_str(delta);
        let mut out = Vec::new();
        while let Some(segment) = self.next_segment(false) {
            emit(&mut out, segment);
        }
        out
    }

    /// The answer ended: whatever is left, as sentences.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(segment) = self.next_segment(true) {
            emit(&mut out, segment);
        }
        if !self.in_code {
            let rest = std::mem::take(&mut self.pending);
            emit(&mut out, Segment::Text(rest));
        }
        self.pending.clear();
        out
    }

    /// The next complete segment of `pending`, if one is complete.
    fn next_segment(&mut self, ending: bool) -> Option<Segment> {
        if self.in_code {
            // Whole lines only: the closing fence ends the block.
            let newline = self.pending.find('\n')?;
            let line: String = self.pending.drain(..=newline).collect();
            if line.trim_start().starts_with("```") {
                self.in_code = false;
            }
            self.at_line_start = true;
            return Some(Segment::Skip);
        }
        if self.at_line_start {
            let trimmed = self.pending.trim_start_matches([' ', '\t']);
            if trimmed.starts_with("```") {
                self.in_code = true;
                match self.pending.find('\n') {
                    Some(newline) => {
                        self.pending.drain(..=newline);
                    }
                    None => self.pending.clear(),
                }
                return Some(Segment::Text(CODE_OMITTED.into()));
            }
            // A line that may yet become a fence: wait for more.
            if !ending && !trimmed.is_empty() && "```".starts_with(trimmed) {
                return None;
            }
        }
        let end = self.boundary()?;
        let segment: String = self.pending.drain(..end).collect();
        self.at_line_start = segment.ends_with('\n');
        Some(Segment::Text(segment))
    }

    /// Where the first complete sentence of `pending` ends (exclusive).
    fn boundary(&self) -> Option<usize> {
        let text = &self.pending;
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c == '\n' {
                return Some(at + 1);
            }
            if !matches!(c, '.' | '!' | '?' | '…') {
                continue;
            }
            // A list number (`1.`) at the start of a line is no sentence.
            let before = text[..at].trim_start();
            if c == '.' && !before.is_empty() && before.chars().all(|d| d.is_ascii_digit()) {
                continue;
            }
            let mut end = at + c.len_utf8();
            while let Some(&(i, next)) = chars.peek() {
                if matches!(
                    next,
                    '"' | '\'' | ')' | ']' | '*' | '_' | '”' | '’' | '.' | '!' | '?'
                ) {
                    end = i + next.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(_, next)) if next.is_whitespace() => return Some(end),
                Some(_) => {}
                // Punctuation at the very end: wait for what follows.
                None => return None,
            }
        }
        None
    }
}

enum Segment {
    Text(String),
    Skip,
}

fn emit(out: &mut Vec<String>, segment: Segment) {
    if let Segment::Text(text) = segment {
        let cleaned = clean(&text);
        if cleaned.chars().any(char::is_alphanumeric) {
            out.push(cleaned);
        }
    }
}

/// One sentence of markdown as plain words.
pub fn clean(text: &str) -> String {
    let line = text.trim();
    let line = line.trim_start_matches(['#', '>']).trim_start();
    let line = strip_list_marker(line);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        match c {
            '*' | '`' | '~' | '#' => {}
            '|' => out.push(' '),
            '_' => {
                let next = chars.peek().copied().unwrap_or(' ');
                if prev.is_alphanumeric() && next.is_alphanumeric() {
                    out.push(' ');
                }
            }
            // `[text](target)` → text; `![alt](src)` → alt.
            '!' if chars.peek() == Some(&'[') => {}
            ']' if chars.peek() == Some(&'(') => {
                for skipped in chars.by_ref() {
                    if skipped == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            _ => out.push(c),
        }
        prev = c;
    }
    out.split_whitespace()
        .map(|word| {
            if word.starts_with("http://") || word.starts_with("https://") {
                "a link"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_list_marker(line: &str) -> &str {
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(marker) {
            return rest.trim_start();
        }
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return rest.trim_start();
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(deltas: &[&str]) -> Vec<String> {
        let mut s = Sentences::new();
        let mut out: Vec<String> = deltas.iter().flat_map(|d| s.push(d)).collect();
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_complete_as_soon_as_the_next_one_starts() {
        let mut s = Sentences::new();
        assert!(s.push("Hello there").is_empty());
        assert!(s.push(".").is_empty(), "a final period waits");
        assert_eq!(s.push(" How are"), vec!["Hello there."]);
        assert_eq!(s.push(" you? Fine!\n"), vec!["How are you?", "Fine!"]);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn numbers_abbreviated_lists_and_quotes_do_not_split_wrongly() {
        assert_eq!(
            split(&["Pi is 3.14 today. ", "He said \"stop.\" Then left…", " ok"]),
            vec!["Pi is 3.14 today.", "He said \"stop.\"", "Then left…", "ok"]
        );
        assert_eq!(
            split(&["1. First item\n2. Second item\n"]),
            vec!["First item", "Second item"]
        );
    }

    #[test]
    fn code_blocks_are_omitted_even_when_fences_arrive_in_pieces() {
        let out = split(&[
            "Run this:\n`",
            "``rust\nfn main() { println!(\"hi. there\"); }\n",
            "``",
            "`\nDone. ",
        ]);
        assert_eq!(out, vec!["Run this:", CODE_OMITTED, "Done."]);
        assert_eq!(split(&["```\nunclosed code. more"]), vec![CODE_OMITTED]);
    }

    #[test]
    fn markdown_symbols_and_links_are_not_read() {
        assert_eq!(
            clean("## **Bold** and _em_ with `code` and [docs](https://x.y/z) see https://a.b"),
            "Bold and em with code and docs see a link"
        );
        assert_eq!(clean("- snake_case | table |"), "snake case table");
        assert_eq!(clean("> quoted ![img](p.png)"), "quoted img");
    }

    #[test]
    fn paragraphs_and_wordless_lines_are_dropped_between_sentences() {
        assert_eq!(
            split(&["First\n\n---\n\n", "Second"]),
            vec!["First", "Second"]
        );
        assert!(split(&["", "  \n", "***"]).is_empty());
    }
}
