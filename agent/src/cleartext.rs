//! Where a credential may travel: over https anywhere, over plain http only to this machine.
//!
//! One rule for every place a token or a client secret leaves the agent (the IdP's
//! endpoints, STS, Backstage, the git and docker helpers), checked at config load where the
//! URL is configured and again where a URL arrives at run time (a discovery document, a
//! helper's input). An `http://` issuer on another host sent the client secret in Basic
//! auth in clear text, and the docker helper served `http://ghcr.io`.

/// `127.0.0.1`, `localhost`, `[::1]`, any of them with a port.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `url` may carry a credential: `https`, or `http` to a loopback host.
pub fn allows(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host().is_some_and(|h| match h {
            url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        }),
        _ => false,
    }
}

/// [`allows`] for a configured URL, with the message a config error gives.
pub fn check(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if u.host().is_some() && allows(&u) => Ok(()),
        Ok(u) if u.scheme() == "http" && u.host().is_some() => Err(format!(
            "{url:?} is plain http to a host that is not this machine: a credential would cross \
             the network in clear text; use https (http is allowed for localhost, 127.0.0.1 and \
             [::1] only)"
        )),
        _ => Err(format!("{url:?} is not an http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_to_loopback_only() {
        assert!(check("https://idp.example/realms/x").is_ok());
        assert!(check("http://127.0.0.1:8080/realms/x").is_ok());
        assert!(check("http://localhost:8080").is_ok());
        assert!(check("http://[::1]:8080").is_ok());
        let e = check("http://idp.example/realms/x").unwrap_err();
        assert!(e.contains("clear text"), "{e}");
        assert!(check("http://10.0.0.1").is_err());
        assert!(check("http://127.0.0.1.nip.io").is_err());
        assert!(check("ftp://idp.example").is_err());
        assert!(check("not a url").is_err());
        assert!(is_loopback_host("[::1]:80"));
        assert!(is_loopback_host("localhost:1"));
        assert!(!is_loopback_host("10.0.0.1:80"));
    }
}
