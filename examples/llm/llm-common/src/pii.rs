//! A small hand-written PII scanner (no `regex` crate: it keeps the wasm
//! small): emails, phone numbers and payment card numbers.
//!
//! * **email**: `local@domain.tld`, local part of `[A-Za-z0-9._%+-]`,
//!   domain labels of `[A-Za-z0-9-]` with at least one dot and a
//!   top-level label of two or more letters;
//! * **card**: 13 to 19 digits, optionally grouped by single spaces or
//!   dashes, that pass the Luhn check;
//! * **phone**: 10 to 15 digits (8 to 15 after a leading `+`), grouped by
//!   spaces, dashes or parentheses, that are not a card.
//!
//! A digit run touching a letter or digit on either side (`abc1234567890`)
//! is not a match. These are heuristics: a 10-digit order number masks as
//! a phone, an email longer than [`MAX_HOLD`] split across stream chunks
//! may pass.

/// Which kinds to mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    /// Email addresses → `[EMAIL]`.
    pub email: bool,
    /// Phone numbers → `[PHONE]`.
    pub phone: bool,
    /// Card numbers (Luhn) → `[CARD]`.
    pub card: bool,
}

impl Default for Kinds {
    fn default() -> Self {
        Kinds {
            email: true,
            phone: true,
            card: true,
        }
    }
}

/// What a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A card number.
    Card,
}

impl Kind {
    /// Its replacement text.
    pub fn mask(self) -> &'static str {
        match self {
            Kind::Email => "[EMAIL]",
            Kind::Phone => "[PHONE]",
            Kind::Card => "[CARD]",
        }
    }
}

/// The most text a stream masker holds back between chunks (bytes).
pub const MAX_HOLD: usize = 64;

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// The matches of `text`, in order, not overlapping: `(start, end, kind)`
/// byte ranges (always on ASCII boundaries).
pub fn find(text: &str, kinds: Kinds) -> Vec<(usize, usize, Kind)> {
    let b = text.as_bytes();
    let mut out: Vec<(usize, usize, Kind)> = Vec::new();
    if kinds.email {
        for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
            if let Some(m) = email_at(b, at)
                && out.last().is_none_or(|l| l.1 <= m.0)
            {
                out.push(m);
            }
        }
    }
    if kinds.phone || kinds.card {
        let mut i = 0;
        while i < b.len() {
            match number_at(b, i) {
                Some((end, kind)) => {
                    let wanted = match kind {
                        Kind::Card => kinds.card,
                        _ => kinds.phone,
                    };
                    if wanted && !out.iter().any(|m| m.0 < end && i < m.1) {
                        out.push((i, end, kind));
                    }
                    i = end;
                }
                None => i += 1,
            }
        }
        out.sort_by_key(|m| m.0);
    }
    out
}

fn email_at(b: &[u8], at: usize) -> Option<(usize, usize, Kind)> {
    let mut start = at;
    while start > 0 && is_local(b[start - 1]) {
        start -= 1;
    }
    while start < at && b[start] == b'.' {
        start += 1;
    }
    let mut end = at + 1;
    while end < b.len() && is_domain(b[end]) {
        end += 1;
    }
    while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
        end -= 1;
    }
    if start == at || end == at + 1 {
        return None;
    }
    let domain = &b[at + 1..end];
    let labels: Vec<&[u8]> = domain.split(|c| *c == b'.').collect();
    let tld = labels.last()?;
    let ok = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic);
    ok.then_some((start, end, Kind::Email))
}

/// A phone or card number starting at `i`: its end and kind.
fn number_at(b: &[u8], i: usize) -> Option<(usize, Kind)> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'+' | b'(')) {
        return None;
    }
    let plus = b[i] == b'+';
    let mut j = i + usize::from(plus);
    if b.get(j) == Some(&b'(') {
        j += 1;
    }
    if !b.get(j).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut digits = Vec::new();
    let mut end = j;
    let mut seps = 0;
    while j < b.len() {
        let c = b[j];
        if c.is_ascii_digit() {
            digits.push(c - b'0');
            seps = 0;
            j += 1;
            end = j;
        } else if matches!(c, b' ' | b'-' | b'(' | b')') && seps < 2 {
            seps += 1;
            j += 1;
        } else {
            break;
        }
        if digits.len() > 19 {
            return None;
        }
    }
    if b.get(end).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    let n = digits.len();
    if (13..=19).contains(&n) && luhn(&digits) {
        return Some((end, Kind::Card));
    }
    let phone = if plus { 8..=15 } else { 10..=15 };
    phone.contains(&n).then_some((end, Kind::Phone))
}

/// The Luhn check of a digit string.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, d)| {
            let d = u32::from(*d);
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// `text` with every match replaced by its mask, and the number of
/// matches.
pub fn mask(text: &str, kinds: Kinds) -> (String, usize) {
    let matches = find(text, kinds);
    if matches.is_empty() {
        return (text.to_owned(), 0);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e, k) in &matches {
        out.push_str(&text[at..*s]);
        out.push_str(k.mask());
        at = *e;
    }
    out.push_str(&text[at..]);
    (out, matches.len())
}

/// Where a stream masker may cut `text` that more text will follow: the
/// tail after the cut could still become (part of) a match once the next
/// piece arrives, so it is held back; everything before it is safe to
/// mask and send. The tail is the trailing run of characters a match is
/// made of (letters, digits, `@._%+-()`, and the spaces inside a number
/// that runs to the end), at most [`MAX_HOLD`] bytes.
pub fn safe_cut(text: &str) -> usize {
    let b = text.as_bytes();
    let mut i = b.len();
    // The tail so far could be the rest of a grouped number.
    let mut numeric = true;
    while i > 0 && b.len() - i < MAX_HOLD {
        let c = b[i - 1];
        let space_in_number =
            c == b' ' && numeric && i >= 2 && (b[i - 2].is_ascii_digit() || b[i - 2] == b')');
        if !(is_local(c) || matches!(c, b'@' | b'(' | b')') || space_in_number) {
            break;
        }
        numeric &= !c.is_ascii_alphabetic() && c != b'@';
        i -= 1;
    }
    i
}

/// Masks text that arrives in pieces (a streamed completion): each
/// [`StreamMasker::push`] returns the masked text that is safe to send
/// now and holds back a short tail ([`safe_cut`]);
/// [`StreamMasker::finish`] returns the rest.
#[derive(Debug, Default)]
pub struct StreamMasker {
    held: String,
    /// Matches masked so far.
    pub masked: usize,
}

impl StreamMasker {
    /// Adds a piece; returns what can be sent now (possibly empty).
    pub fn push(&mut self, piece: &str, kinds: Kinds) -> String {
        self.held.push_str(piece);
        let cut = safe_cut(&self.held);
        let rest = self.held.split_off(cut);
        let ready = std::mem::replace(&mut self.held, rest);
        let (out, n) = mask(&ready, kinds);
        self.masked += n;
        out
    }

    /// Text is being held back.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// The held tail, masked (at the end of the stream).
    pub fn finish(&mut self, kinds: Kinds) -> String {
        let (out, n) = mask(&std::mem::take(&mut self.held), kinds);
        self.masked += n;
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn m(s: &str) -> String {
        mask(s, Kinds::default()).0
    }

    #[test]
    fn emails() {
        assert_eq!(m("mail john.doe+x@example.co.uk now"), "mail [EMAIL] now");
        assert_eq!(m("end: a@b.io."), "end: [EMAIL].");
        assert_eq!(m("not@an-email"), "not@an-email");
        assert_eq!(m("x@y.c1"), "x@y.c1");
        assert_eq!(m("@example.com"), "@example.com");
        assert_eq!(m("é a@b.io é"), "é [EMAIL] é");
    }

    #[test]
    fn cards_and_phones() {
        assert_eq!(m("card 4111 1111 1111 1111 ok"), "card [CARD] ok");
        assert_eq!(m("card 4111-1111-1111-1111"), "card [CARD]");
        assert_eq!(m("card 4111111111111112"), "card 4111111111111112");
        assert_eq!(m("call +1 (555) 123-4567!"), "call [PHONE]!");
        assert_eq!(m("call 555-123-4567"), "call [PHONE]");
        assert_eq!(m("(555) 123 4567"), "[PHONE]");
        assert_eq!(m("year 2024 and 12345"), "year 2024 and 12345");
        assert_eq!(m("id abc5551234567"), "id abc5551234567");
        assert_eq!(m("12345678901234567890123"), "12345678901234567890123");
    }

    #[test]
    fn kinds_can_be_off() {
        let only_email = Kinds {
            email: true,
            phone: false,
            card: false,
        };
        assert_eq!(
            mask("a@b.io 555-123-4567", only_email).0,
            "[EMAIL] 555-123-4567"
        );
    }

    #[test]
    fn luhn_known_values() {
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
    }

    #[test]
    fn stream_masks_a_match_split_across_pieces() {
        let mut s = StreamMasker::default();
        let k = Kinds::default();
        let mut out = s.push("Write to jo", k);
        assert_eq!(out, "Write to ");
        out += &s.push("hn@exam", k);
        out += &s.push("ple.com or call 555-", k);
        out += &s.push("123-4567 today", k);
        out += &s.finish(k);
        assert_eq!(out, "Write to [EMAIL] or call [PHONE] today");
        assert_eq!(s.masked, 2);
    }

    #[test]
    fn stream_holds_only_what_can_still_match() {
        assert_eq!(safe_cut("card 4111 1111 ok"), "card 4111 1111 ".len());
        assert_eq!(safe_cut("card 4111 1111"), "card ".len());
        assert_eq!(safe_cut("see a.b@"), "see ".len());
        assert_eq!(safe_cut("done. "), "done. ".len());
    }

    #[test]
    fn stream_holds_at_most_max_hold() {
        let mut s = StreamMasker::default();
        let out = s.push(&"a".repeat(200), Kinds::default());
        assert_eq!(out.len(), 200 - MAX_HOLD);
        assert!(s.holding());
    }

    #[test]
    fn every_split_of_a_text_masks_as_the_whole() {
        for text in [
            "Hi, I am ann@corp.example.org, card 4111 1111 1111 1111, tel +44 20 7946 0958. Bye",
            "card 4111 1111 1111 1111 ok (555) 123-4567 x@y.io",
            "é 5551234567é a.b@c.de, 12 34",
        ] {
            every_split(text);
        }
    }

    fn every_split(text: &str) {
        let whole = m(text);
        for cut in (0..=text.len()).filter(|c| text.is_char_boundary(*c)) {
            let mut s = StreamMasker::default();
            let k = Kinds::default();
            let mut out = s.push(&text[..cut], k);
            out += &s.push(&text[cut..], k);
            out += &s.finish(k);
            assert_eq!(out, whole, "cut at {cut}");
        }
    }
}
