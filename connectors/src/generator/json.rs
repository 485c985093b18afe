//! Minimal JSON writing for alert lines: escaping and an object builder that
//! keeps keys in the order they are written (Wazuh's order), with no
//! allocation once its buffer has grown.

use std::fmt::{self, Write as _};

/// Whether any of the 8 bytes in `w` is a control character, `"` or `\\`
/// (SWAR: exact for this test, non-ASCII bytes never match).
const fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * 0x22);
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    let b = w ^ (ONES * 0x5C);
    let backslash = b.wrapping_sub(ONES) & !b & HIGH;
    (control | quote | backslash) != 0
}

/// Appends `s` JSON-escaped (without quotes).
pub(crate) fn esc(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        while let Some(chunk) = bytes.get(i..i + 8) {
            let w =
                u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
            if needs_escape(w) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let rep: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => {
                out.push_str(&s[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        // Escaped bytes are ASCII, so `start..i` ends on a char boundary.
        out.push_str(&s[start..i]);
        out.push_str(rep);
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
}

/// A `fmt::Write` adapter that JSON-escapes what is formatted into it.
pub(crate) struct Esc<'a>(pub &'a mut String);

impl fmt::Write for Esc<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        esc(self.0, s);
        Ok(())
    }
}

/// Appends a decimal integer.
pub(crate) fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // The buffer only holds ASCII digits.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends bytes as lowercase hex.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// An object/array builder over a reusable `String`.
#[derive(Debug, Default)]
pub(crate) struct J {
    pub buf: String,
    first: bool,
}

impl J {
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.first = true;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn comma(&mut self) {
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
    }

    /// Starts the top-level object.
    pub(crate) fn begin(&mut self) {
        self.buf.push('{');
        self.first = true;
    }

    pub(crate) fn key(&mut self, k: &str) {
        self.comma();
        self.buf.push('"');
        self.buf.push_str(k);
        self.buf.push_str("\":");
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.buf.push('"');
        esc(&mut self.buf, v);
        self.buf.push('"');
        self
    }

    /// A string value formatted in place: `j.strf("url", format_args!(...))`.
    pub(crate) fn strf(&mut self, k: &str, args: fmt::Arguments<'_>) -> &mut Self {
        self.key(k);
        self.buf.push('"');
        let _ = Esc(&mut self.buf).write_fmt(args);
        self.buf.push('"');
        self
    }

    /// An unsigned number written as a JSON string (`"srcport":"51234"`, as
    /// Wazuh's decoders emit every field).
    pub(crate) fn num_str(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.buf.push('"');
        push_u64(&mut self.buf, v);
        self.buf.push('"');
        self
    }

    /// A string value written by `f` (which must not need escaping, e.g. a
    /// timestamp).
    pub(crate) fn str_with(&mut self, k: &str, f: impl FnOnce(&mut String)) -> &mut Self {
        self.key(k);
        self.buf.push('"');
        f(&mut self.buf);
        self.buf.push('"');
        self
    }

    /// A pre-rendered JSON value.
    pub(crate) fn raw(&mut self, k: &str, json: &str) -> &mut Self {
        self.key(k);
        self.buf.push_str(json);
        self
    }

    /// Bytes as a lowercase hex string (hashes).
    pub(crate) fn hex(&mut self, k: &str, bytes: &[u8]) -> &mut Self {
        self.key(k);
        self.buf.push('"');
        push_hex(&mut self.buf, bytes);
        self.buf.push('"');
        self
    }

    /// Opens a nested object under `k`; close it with [`J::end`].
    pub(crate) fn obj(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.buf.push('{');
        self.first = true;
        self
    }

    /// Opens a nested array under `k`; close it with [`J::end_arr`].
    pub(crate) fn arr(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.buf.push('[');
        self.first = true;
        self
    }

    /// An array element that is an object; close it with [`J::end`].
    pub(crate) fn elem_obj(&mut self) -> &mut Self {
        self.comma();
        self.buf.push('{');
        self.first = true;
        self
    }

    pub(crate) fn elem_str(&mut self, v: &str) -> &mut Self {
        self.comma();
        self.buf.push('"');
        esc(&mut self.buf, v);
        self.buf.push('"');
        self
    }

    pub(crate) fn arr_str(&mut self, k: &str, items: &[&str]) -> &mut Self {
        self.arr(k);
        for it in items {
            self.elem_str(it);
        }
        self.end_arr()
    }

    pub(crate) fn end(&mut self) -> &mut Self {
        self.buf.push('}');
        self.first = false;
        self
    }

    pub(crate) fn end_arr(&mut self) -> &mut Self {
        self.buf.push(']');
        self.first = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let mut s = String::new();
        esc(&mut s, "a\"b\\c\nd\te\u{1}f é");
        assert_eq!(s, "a\\\"b\\\\c\\nd\\te\\u0001f é");
        let v: String = serde_json::from_str(&format!("\"{s}\"")).unwrap();
        assert_eq!(v, "a\"b\\c\nd\te\u{1}f é");
    }

    #[test]
    fn escaping_matches_serde_on_every_byte() {
        for b in 0u8..128 {
            for pos in 0..12 {
                let mut text = "abcdefghijk".to_string();
                text.insert(pos, b as char);
                text.push_str("é€𝄞 tail");
                let mut mine = String::new();
                esc(&mut mine, &text);
                let theirs = serde_json::to_string(&text).unwrap();
                let back: String = serde_json::from_str(&format!("\"{mine}\"")).unwrap();
                assert_eq!(back, text);
                if b >= 0x20 || matches!(b, b'\n' | b'\r' | b'\t') {
                    assert_eq!(format!("\"{mine}\""), theirs);
                }
            }
        }
    }

    #[test]
    fn builder_nests() {
        let mut j = J::default();
        j.clear();
        j.begin();
        j.str("a", "x\"y").num_str("p", 22).obj("o").num_str("n", 0).end();
        j.arr_str("l", &["1", "2"]).arr("e").elem_obj().str("k", "v").end().end_arr();
        j.end();
        let v: serde_json::Value = serde_json::from_str(&j.buf).unwrap();
        assert_eq!(v["a"], "x\"y");
        assert_eq!(v["p"], "22");
        assert_eq!(v["o"]["n"], "0");
        assert_eq!(v["l"][1], "2");
        assert_eq!(v["e"][0]["k"], "v");
        let mut n = String::new();
        push_u64(&mut n, 0);
        push_u64(&mut n, 18_446_744_073_709_551_615);
        assert_eq!(n, "018446744073709551615");
    }
}
