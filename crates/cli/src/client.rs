//! A minimal HTTP/1.1 client over one keep-alive TCP connection: enough for the CLI's client commands
//! and for the load generator, whose hot path must not allocate per request. `http://`, and
//! `https://` with rustls (the system's roots plus `--ca-file`).

use std::{
    io,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};

/// Largest response head accepted, in bytes.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// Largest response body accepted, in bytes.
const BODY_BYTES_MAX: usize = 256 << 20;

/// `http[s]://host:port[/prefix]` split into what a connection needs.
#[derive(Clone)]
pub(crate) struct Target {
    /// `host:port` for `connect`.
    pub addr: String,
    /// The `Host` header value.
    pub host: String,
    /// Path prefix (no trailing slash), usually empty.
    pub prefix: String,
    /// For `https://`: the TLS client and the name the certificate must carry.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// A plain `http://` URL (tests; `https://` needs [`Target::new`]).
    #[cfg(test)]
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        Self::new(url, None)
    }

    /// `url`; an `https://` one trusts the system's roots and every certificate in `ca_file`.
    pub(crate) fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        let (rest, https) = match url.strip_prefix("https://") {
            Some(r) => (r, true),
            None => (
                url.strip_prefix("http://")
                    .ok_or_else(|| format!("url {url:?}: use an http:// or https:// URL"))?,
                false,
            ),
        };
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            return Err(format!("url {url:?} has no host"));
        }
        let has_port = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && !h.ends_with('['));
        let addr = if has_port {
            hostport.to_owned()
        } else {
            format!("{hostport}:{}", if https { 443 } else { 80 })
        };
        let tls = if https {
            let name = if has_port {
                hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
            } else {
                hostport
            };
            let name = name.trim_start_matches('[').trim_end_matches(']');
            let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
                .map_err(|e| format!("url {url:?}: {name:?} is not a host name for TLS: {e}"))?;
            let config = kyrodb_server::tls::client(ca_file, None)?;
            Some((
                tokio_rustls::TlsConnector::from(Arc::new(config)),
                server_name,
            ))
        } else {
            // A CA file (e.g. KYRODB_CA_FILE exported for other servers) means nothing to http.
            None
        };
        Ok(Self {
            addr,
            host: hostport.to_owned(),
            prefix: prefix.to_owned(),
            tls,
        })
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Plain",
            Stream::Tls(_) => "Tls",
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A parsed response.
#[derive(Debug, Default)]
pub(crate) struct Response {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One connection with a read buffer that survives between responses.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
}

/// What the fast path of [`Conn::read_response`] reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub status: u16,
}

impl Conn {
    pub(crate) async fn connect(target: &Target) -> io::Result<Self> {
        let tcp = TcpStream::connect(&target.addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match &target.tls {
            None => Stream::Plain(tcp),
            // Certificate problems (expired, unknown issuer, wrong name) come back as InvalidData
            // with rustls's reason.
            Some((connector, name)) => Stream::Tls(Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("TLS: {e}")))?,
            )),
        };
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 << 10),
            start: 0,
        })
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response. With `out` it also keeps headers and body; without, it only skips them.
    pub(crate) async fn read_response(
        &mut self,
        mut out: Option<&mut Response>,
    ) -> io::Result<Head> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.start..], b"\r\n\r\n") {
                break self.start + i + 4;
            }
            if self.buf.len() - self.start > HEAD_BYTES_MAX {
                return Err(bad("response head too large"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[self.start..head_end])
            .map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut len, mut chunked) = (0usize, false);
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                len = value.parse().map_err(|_| bad("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
            if let Some(o) = out.as_deref_mut() {
                o.headers
                    .push((name.to_ascii_lowercase(), value.to_owned()));
            }
        }
        self.start = head_end;
        if chunked {
            self.read_chunked(out.as_deref_mut()).await?;
        } else {
            self.read_exact_body(len, out.as_deref_mut()).await?;
        }
        if let Some(o) = out {
            o.status = status;
        }
        self.compact();
        Ok(Head { status })
    }

    async fn read_exact_body(
        &mut self,
        len: usize,
        out: Option<&mut Response>,
    ) -> io::Result<usize> {
        if len > BODY_BYTES_MAX {
            return Err(bad("response body too large"));
        }
        while self.buf.len() - self.start < len {
            self.fill().await?;
        }
        if let Some(o) = out {
            o.body
                .extend_from_slice(&self.buf[self.start..self.start + len]);
        }
        self.start += len;
        Ok(len)
    }

    async fn read_chunked(&mut self, mut out: Option<&mut Response>) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf[self.start..], b"\r\n") {
                    break self.start + i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[self.start..line_end])
                .map_err(|_| bad("bad chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            self.start = line_end + 2;
            total += size;
            if total > BODY_BYTES_MAX {
                return Err(bad("response body too large"));
            }
            // The chunk and its CRLF (the last chunk is followed by an empty trailer line).
            self.read_exact_body(size, out.as_deref_mut()).await?;
            while self.buf.len() - self.start < 2 {
                self.fill().await?;
            }
            self.start += 2;
            if size == 0 {
                return Ok(total);
            }
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 << 10);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        Ok(())
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 32 << 10 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Sends a request and reads the whole response.
    pub(crate) async fn request(
        &mut self,
        target: &Target,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> io::Result<Response> {
        let req = build_request(target, method, path, token, content_type, body);
        let sent = self.send(&req).await;
        let mut resp = Response::default();
        match (self.read_response(Some(&mut resp)).await, sent) {
            (Ok(_), _) => Ok(resp),
            // A server may answer early (413 for a body over its limit) and close before reading the
            // rest; its answer says more than the broken pipe does.
            (Err(_), Err(e)) | (Err(e), Ok(())) => Err(e),
        }
    }
}

/// The bytes of one request.
pub(crate) fn build_request(
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(128 + body.len());
    build_request_into(&mut bytes, target, method, path, token, content_type, body);
    bytes
}

/// [`build_request`] into a reused buffer (the load generator's hot path allocates nothing).
pub(crate) fn build_request_into(
    out: &mut Vec<u8>,
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) {
    use std::io::Write as _;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\n",
        target.prefix, target.host
    );
    if let Some(t) = token {
        let _ = write!(out, "Authorization: Bearer {t}\r\n");
    }
    if let Some(ct) = content_type {
        let _ = write!(out, "Content-Type: {ct}\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// `segment` as one percent-encoded URL path segment: every byte but ASCII letters, digits, `-`, `_`
/// and `~` is `%XX` (so `/`, `?`, `#`, `%`, spaces and `.`/`..` segments cannot change the route).
pub(crate) fn path_segment(segment: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing into a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_addr_host_and_prefix() {
        let t = Target::parse("http://127.0.0.1:9000/base/").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.host.as_str(), t.prefix.as_str()),
            ("127.0.0.1:9000", "127.0.0.1:9000", "/base")
        );
        assert_eq!(
            Target::parse("http://localhost").unwrap().addr,
            "localhost:80"
        );
        assert!(Target::parse("ftp://x").is_err());
        let t = Target::new("https://localhost", None).unwrap();
        assert_eq!((t.addr.as_str(), t.tls.is_some()), ("localhost:443", true));
        assert!(Target::new("http://x", Some(Path::new("/ca.pem")))
            .unwrap()
            .tls
            .is_none());
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("plain-id_1~"), "plain-id_1~");
        assert_eq!(path_segment("a/b@c d"), "a%2Fb%40c%20d");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("é?#%"), "%C3%A9%3F%23%25");
    }
}
