//! A minimal HTTP/1.1 keep-alive client: one TCP connection per `Conn`,
//! reconnected only after an error or a `Connection: close`. Each virtual
//! user owns one `Conn`, so the server sees exactly `--connections` sockets.

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE, COOKIE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use tokio::net::TcpStream;

/// The server under test, from a base URL such as `http://127.0.0.1:8080/cas`.
#[derive(Debug)]
pub struct Target {
    pub authority: String,
    pub addr: SocketAddr,
    /// The base path without a trailing slash ("/cas", or "").
    pub path: String,
}

impl Target {
    pub fn parse(base: &str) -> Result<Arc<Self>> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--url must be an http:// URL (no TLS here): {base}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let with_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
        Ok(Arc::new(Self {
            authority: authority.to_owned(),
            addr,
            path: path.trim_end_matches('/').to_owned(),
        }))
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(200).collect()
    }
}

pub struct Conn {
    target: Arc<Target>,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// TCP connections opened (1 when keep-alive held all along).
    pub connects: u64,
    /// A `DPoP` header for the next request only.
    pub dpop: Option<String>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Self {
        let host = HeaderValue::from_str(&target.authority).expect("authority is a header value");
        Self {
            target,
            host,
            sender: None,
            connects: 0,
            dpop: None,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            let stream = TcpStream::connect(self.target.addr)
                .await
                .with_context(|| format!("connecting to {}", self.target.addr))?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.connects += 1;
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just set"))
    }

    pub async fn get(&mut self, path_and_query: &str, cookie: Option<&str>) -> Result<Resp> {
        self.send(Method::GET, path_and_query, cookie, None).await
    }

    pub async fn post_form(
        &mut self,
        path_and_query: &str,
        cookie: Option<&str>,
        form: String,
    ) -> Result<Resp> {
        self.send(Method::POST, path_and_query, cookie, Some(form))
            .await
    }

    async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        cookie: Option<&str>,
        form: Option<String>,
    ) -> Result<Resp> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, self.host.clone());
        if let Some(c) = cookie {
            builder = builder.header(COOKIE, c);
        }
        if let Some(proof) = self.dpop.take() {
            builder = builder.header("dpop", proof);
        }
        let body = match form {
            Some(f) => {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body)?;
        let result = async {
            let sender = self.sender().await?;
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        }
        .await;
        match &result {
            Err(_) => self.sender = None,
            Ok(r) => {
                if r.headers
                    .get(CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                {
                    self.sender = None;
                }
            }
        }
        result
    }
}

/// Fails unless the response has the expected status.
pub fn expect_status(r: &Resp, want: StatusCode, what: &str) -> Result<()> {
    if r.status != want {
        bail!(
            "{what}: expected {want}, got {} ({})",
            r.status,
            r.snippet().replace('\n', " ")
        );
    }
    Ok(())
}
