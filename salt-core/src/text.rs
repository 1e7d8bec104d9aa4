//! Texts shown in messages, cut to a readable length.

/// At most 200 bytes of a text, for error messages that quote what a peer sent.
pub fn short(text: &str) -> String {
    short_to(text, 200)
}

/// At most `max` bytes of a text (cut at a character boundary), saying how long it was.
pub fn short_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}
