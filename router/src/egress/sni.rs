//! The server name a TLS client asks for (SNI), read from its first record
//! without touching the encryption: the CONNECT host must be the name inside,
//! or an allowed host could front for another behind the same CDN address.
//!
//! What it cannot see: anything after the ClientHello (the URL, the `Host` header
//! inside the tunnel, the certificate); a client that sends no SNI (IP literals);
//! an Encrypted ClientHello's inner name (the outer one is checked).

/// What the first bytes of a tunnel say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS handshake record: some other protocol, passed through as is.
    NotTls,
    /// More bytes are needed to read the whole first record.
    Incomplete,
    /// A ClientHello; its server name, if it sent one (normalized).
    Tls(Option<String>),
    /// A TLS handshake record that is not a readable ClientHello (fragmented,
    /// malformed): refused, since its name cannot be checked.
    Unreadable,
}

/// The largest TLS record (2^14 bytes of plaintext plus room for expansion).
pub const MAX_RECORD: usize = 5 + 16384 + 2048;

/// Reads `buf`, the first bytes the client sent into the tunnel.
pub fn parse(buf: &[u8]) -> Hello {
    let Some(&first) = buf.first() else {
        return Hello::Incomplete;
    };
    if first != 0x16 {
        return Hello::NotTls;
    }
    if buf.len() < 5 {
        return Hello::Incomplete;
    }
    if buf[1] != 3 {
        return Hello::NotTls;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + len {
        return if 5 + len > MAX_RECORD {
            Hello::Unreadable
        } else {
            Hello::Incomplete
        };
    }
    match client_hello_sni(&buf[5..5 + len]) {
        Some(name) => Hello::Tls(name),
        None => Hello::Unreadable,
    }
}

/// A cursor over a byte slice that fails (None) instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// The SNI of a handshake record's ClientHello: `Some(None)` when it has none,
/// `None` when it is not a whole ClientHello.
fn client_hello_sni(record: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut hello = Reader(r.take(len)?);
    hello.take(2 + 32)?; // version, random
    let n = hello.u8()?;
    hello.take(n)?; // session id
    let n = hello.u16()?;
    hello.take(n)?; // cipher suites
    let n = hello.u8()?;
    hello.take(n)?; // compression methods
    if hello.0.is_empty() {
        return Some(None);
    }
    let n = hello.u16()?;
    let mut extensions = Reader(hello.take(n)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let n = extensions.u16()?;
        let data = extensions.take(n)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let n = list.u16()?;
        let mut names = Reader(list.take(n)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let n = names.u16()?;
            let name = names.take(n)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(super::policy::normalize_host(name)?));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    fn client_hello(name: &str) -> Vec<u8> {
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocols")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let mut conn = ClientConnection::new(Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write");
        }
        out
    }

    #[test]
    fn the_server_name_of_a_real_client_hello_is_read() {
        let hello = client_hello("PyPI.org");
        assert_eq!(parse(&hello), Hello::Tls(Some("pypi.org".into())));
        // Arriving in pieces: incomplete until the record is whole.
        assert_eq!(parse(&hello[..1]), Hello::Incomplete);
        assert_eq!(parse(&hello[..4]), Hello::Incomplete);
        assert_eq!(parse(&hello[..hello.len() - 1]), Hello::Incomplete);
    }

    #[test]
    fn an_ip_literal_sends_no_name() {
        assert_eq!(parse(&client_hello("93.184.215.14")), Hello::Tls(None));
    }

    #[test]
    fn other_protocols_pass_and_garbage_is_unreadable() {
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Hello::NotTls);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(&[0x16, 3, 1, 0, 4, 1, 0, 0, 9]), Hello::Unreadable);
        assert_eq!(parse(&[0x16, 3, 1, 0xff, 0xff]), Hello::Unreadable);
        // A ClientHello cut short inside its record (fragmented across records).
        let hello = client_hello("pypi.org");
        let mut cut = hello[..60].to_vec();
        cut[3..5].copy_from_slice(&55u16.to_be_bytes());
        assert_eq!(parse(&cut), Hello::Unreadable);
    }
}
