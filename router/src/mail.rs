//! Outgoing mail over SMTP (`JARVIS_SMTP_URL`, `JARVIS_MAIL_FROM`) with lettre:
//! the verification link of a built-in account. What a link means and when it
//! is sent are `auth::verification`'s and the handlers' business, not this
//! module's.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};

use crate::config::Config;

/// Longest an SMTP exchange may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Mail could not be set up or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// `JARVIS_SMTP_URL` is not a usable SMTP URL.
    #[error("JARVIS_SMTP_URL is not a usable SMTP URL: {0}")]
    Url(#[source] lettre::transport::smtp::Error),
    /// `JARVIS_MAIL_FROM` (or the default made from the public URL) is not an address.
    #[error("JARVIS_MAIL_FROM is not a mail address ({0:?})")]
    From(String),
    /// The recipient's address cannot be written in a mail header.
    #[error("the address cannot receive mail from here")]
    Recipient,
    /// The message could not be built.
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    /// The SMTP server refused or could not be reached.
    #[error("sending over SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// Sends the router's mail through one SMTP server.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer of `config`, or `None` when `JARVIS_SMTP_URL` is unset.
    pub fn from_config(config: &Config) -> Result<Option<Self>, MailError> {
        let Some(url) = config.smtp_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(MailError::Url)?
            .timeout(Some(TIMEOUT))
            .build();
        let from = match config.mail_from.as_deref() {
            Some(from) => from.parse().map_err(|_| MailError::From(from.into()))?,
            None => format!("Jarvis <noreply@{}>", host_of(&config.public_url()))
                .parse()
                .or_else(|_| "Jarvis <noreply@localhost>".parse())
                .map_err(|_| MailError::From("noreply@localhost".into()))?,
        };
        Ok(Some(Self { transport, from }))
    }

    /// Sends `to` the link that verifies their address.
    pub async fn send_verification(&self, to: &str, link: &str) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Recipient)?;
        let body = format!(
            "Hello,\r\n\r\nsomeone (we hope you) created a Jarvis account with this address.\r\n\
             Open this link to confirm it:\r\n\r\n{link}\r\n\r\n\
             The link works once, for 24 hours. If it wasn't you, ignore this mail.\r\n"
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Confirm your email address for Jarvis")
            .header(ContentType::TEXT_PLAIN)
            .body(body)?;
        self.transport.send(message).await?;
        Ok(())
    }
}

/// The host of `url` (`https://a.example.com:8443/x` → `a.example.com`).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_sender_is_noreply_at_the_public_host() {
        assert_eq!(host_of("https://jarvis.example.com"), "jarvis.example.com");
        assert_eq!(host_of("http://127.0.0.1:8080/"), "127.0.0.1");
        let mut config = Config::defaults();
        config.smtp_url = Some("smtp://127.0.0.1:2525".into());
        config.public_url = Some("https://jarvis.example.com".into());
        let mailer = Mailer::from_config(&config).expect("valid").expect("on");
        assert_eq!(
            mailer.from.to_string(),
            "Jarvis <noreply@jarvis.example.com>"
        );
        config.smtp_url = Some("gopher://x".into());
        assert!(matches!(
            Mailer::from_config(&config),
            Err(MailError::Url(_))
        ));
    }
}
