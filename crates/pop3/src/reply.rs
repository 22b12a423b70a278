//! POP3 status lines: `+OK text` and `-ERR [CODE] text`, with the response codes of RFC 2449
//! (`IN-USE`, `LOGIN-DELAY`) and RFC 3206 (`SYS/TEMP`, `SYS/PERM`, `AUTH`). This module
//! knows nothing of sessions or sockets.

use std::borrow::Cow;

/// An extended response code, sent in brackets after `-ERR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// `[IN-USE]`: the mailbox is locked by another session (RFC 2449 §8.1.1).
    InUse,
    /// `[AUTH]`: the credentials are wrong; retrying with the same ones will fail again
    /// (RFC 3206 §4).
    Auth,
    /// `[SYS/TEMP]`: a temporary server failure; try again later (RFC 3206 §3).
    SysTemp,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::InUse => "IN-USE",
            Code::Auth => "AUTH",
            Code::SysTemp => "SYS/TEMP",
        }
    }
}

/// One POP3 status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `+OK` or `-ERR`.
    pub ok: bool,
    /// The response code of an `-ERR`.
    pub code: Option<Code>,
    /// The text; CR and LF in it are replaced when written.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// `+OK text`.
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            ok: true,
            code: None,
            text: text.into(),
        }
    }

    /// `-ERR text`.
    pub fn err(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            ok: false,
            code: None,
            text: text.into(),
        }
    }

    /// `-ERR [code] text`.
    pub fn err_code(code: Code, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            ok: false,
            code: Some(code),
            text: text.into(),
        }
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.ok { b"+OK" } else { b"-ERR" });
        if let Some(code) = self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(code.as_str().as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            // Replies may quote what the client sent; never let it break the framing.
            out.extend(self.text.bytes().map(|b| match b {
                b'\r' | b'\n' => b' ',
                b => b,
            }));
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let bytes = |r: Reply| {
            let mut out = Vec::new();
            r.write_to(&mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(bytes(Reply::ok("2 320")), "+OK 2 320\r\n");
        assert_eq!(bytes(Reply::ok("")), "+OK\r\n");
        assert_eq!(bytes(Reply::err("no\r\nsuch")), "-ERR no  such\r\n");
        assert_eq!(
            bytes(Reply::err_code(Code::InUse, "locked")),
            "-ERR [IN-USE] locked\r\n"
        );
        assert_eq!(
            bytes(Reply::err_code(Code::SysTemp, "later")),
            "-ERR [SYS/TEMP] later\r\n"
        );
        assert_eq!(
            bytes(Reply::err_code(Code::Auth, "no")),
            "-ERR [AUTH] no\r\n"
        );
    }
}
