//! The little of Redis's RESP protocol `llm-token-limit`'s Redis budget
//! needs: a command as an array of bulk strings, and the number in a reply.

/// A RESP array of bulk strings: one command, e.g. `GET key`.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The number in a reply: an integer (`:n`), a bulk string that holds one
/// (`$len`, then the digits) or nil (`$-1`: a key not set yet, 0). A
/// negative number counts as 0. `None` for anything else: an error reply
/// such as `-ERR ...`, a bulk string that is not a number, a cut reply.
pub fn number(reply: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(reply).ok()?;
    let (head, rest) = text.split_once("\r\n")?;
    let digits = match head.as_bytes().first()? {
        b':' => &head[1..],
        b'$' if head == "$-1" => return Some(0),
        b'$' => {
            let len: usize = head[1..].parse().ok()?;
            let value = rest.strip_suffix("\r\n")?;
            if value.len() != len {
                return None;
            }
            value
        }
        _ => return None,
    };
    digits.parse::<i64>().ok().map(|n| n.max(0).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"GET", b"p:acme:1"]),
            b"*2\r\n$3\r\nGET\r\n$8\r\np:acme:1\r\n"
        );
        assert_eq!(command(&[b""]), b"*1\r\n$0\r\n\r\n");
    }

    #[test]
    fn numbers_of_replies() {
        assert_eq!(number(b"$-1\r\n"), Some(0));
        assert_eq!(number(b"$2\r\n42\r\n"), Some(42));
        assert_eq!(number(b":17\r\n"), Some(17));
        assert_eq!(number(b":-3\r\n"), Some(0));
        assert_eq!(number(b"-ERR wrong type\r\n"), None);
        assert_eq!(number(b"$3\r\nabc\r\n"), None);
        assert_eq!(number(b"$3\r\n42\r\n"), None);
        assert_eq!(number(b"$2\r\n42"), None);
        assert_eq!(number(b":1"), None);
        assert_eq!(number(b""), None);
        assert_eq!(number(&[0xff, b'\r', b'\n']), None);
    }
}
