//! A private OpenLDAP `slapd` for tests and benchmarks: its own temporary directory, mdb backend,
//! the memberof and ppolicy overlays, a small schema for the Atlassian account id, optional TLS
//! with a CA generated at start, and accounts with and without size limits. It listens on free
//! loopback ports and is killed by its pid when dropped (also when a test panics).
//!
//! Needs Debian's `slapd` and `ldap-utils` (and `openssl` for TLS); `scripts/test.sh` installs them.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=com";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
pub const ADMIN_PW: &str = "admin-secret";
/// A reader with unlimited size limits (paged searches included).
pub const READER_DN: &str = "cn=reader,dc=example,dc=com";
pub const READER_PW: &str = "reader-secret";
/// A reader whose searches stop at 20 entries, paged or not (`size.prtotal`).
pub const LIMITED_DN: &str = "cn=limited,dc=example,dc=com";
pub const LIMITED_PW: &str = "limited-secret";

const SCHEMA: &str = r#"
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'atlassianAccountId'
    DESC 'Atlassian account id' EQUALITY caseExactMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'nsAccountLock'
    DESC 'account locked flag (as in 389-ds)' EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.3 NAME 'userAccountControl'
    DESC 'Active Directory account flags' EQUALITY integerMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'atlassianAccount' SUP top AUXILIARY
    MAY ( atlassianAccountId $ nsAccountLock $ userAccountControl ) )
"#;

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also listen on ldaps://, and configure StartTLS, with a CA generated for this server.
    pub tls: bool,
    /// LDIF loaded with `slapadd -q` before the server starts (fast; overlays do not run).
    pub preload: Option<String>,
}

pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub tls_port: Option<u16>,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(cmd: &mut Command, what: &str) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn slapd_binary() -> PathBuf {
    for p in [
        "/usr/sbin/slapd",
        "/usr/local/sbin/slapd",
        "/usr/local/libexec/slapd",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("slapd")
}

fn slapadd_binary() -> PathBuf {
    for p in ["/usr/sbin/slapadd", "/usr/local/sbin/slapadd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("slapadd")
}

/// `NAME.key` and the self-signed CA certificate `NAME.pem` in `dir`.
fn self_signed_ca(dir: &Path, name: &str, cn: &str) -> io::Result<()> {
    let key = dir.join(format!("{name}.key")).display().to_string();
    let pem = dir.join(format!("{name}.pem")).display().to_string();
    let subject = format!("/CN={cn}");
    let args = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ];
    run(
        Command::new("openssl")
            .args(args)
            .args(["-subj", &subject, "-keyout", &key, "-out", &pem]),
        "openssl (CA)",
    )
}

fn make_ca(dir: &Path) -> io::Result<()> {
    let d = |f: &str| dir.join(f).display().to_string();
    self_signed_ca(dir, "ca", "bbsync test CA")?;
    run(
        Command::new("openssl").args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &d("server.key"),
            "-out",
            &d("server.csr"),
        ]),
        "openssl (server key)",
    )?;
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    run(
        Command::new("openssl").args([
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &d("ext.cnf"),
            "-out",
            &d("server.pem"),
        ]),
        "openssl (sign)",
    )?;
    // A second CA nobody trusts, for "refuses an untrusted certificate" tests.
    self_signed_ca(dir, "other-ca", "other CA")
}

impl Slapd {
    /// Starts a server; retried a few times, since a free port can be taken between choosing
    /// it and slapd binding it.
    pub fn start(opts: Options) -> io::Result<Slapd> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(opts.clone()) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("slapd did not start")))
    }

    fn start_once(opts: Options) -> io::Result<Slapd> {
        let dir = tempfile::Builder::new().prefix("bbsync-slapd-").tempdir()?;
        let p = |f: &str| dir.path().join(f);
        std::fs::create_dir_all(p("db"))?;
        std::fs::write(p("bbsync.schema"), SCHEMA)?;
        if opts.tls {
            make_ca(dir.path())?;
        }
        let tls = if opts.tls {
            format!(
                "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                p("ca.pem").display(),
                p("server.pem").display(),
                p("server.key").display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
include {schema}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload ppolicy
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
{tls}
database mdb
maxsize 2147483648
suffix "{BASE}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PW}
directory {dir}/db
index objectClass eq
index member,uniqueMember eq
limits dn.exact="{READER_DN}" size=unlimited time=unlimited
limits dn.exact="{LIMITED_DN}" size.soft=20 size.hard=20 size.prtotal=20
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read
overlay memberof
overlay ppolicy
"#,
            schema = p("bbsync.schema").display(),
            dir = dir.path().display(),
        );
        std::fs::write(p("slapd.conf"), conf)?;
        let base = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: {READER_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: reader\nsn: reader\nuserPassword: {READER_PW}\n\n\
             dn: {LIMITED_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: limited\nsn: limited\nuserPassword: {LIMITED_PW}\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n{}",
            opts.preload.unwrap_or_default()
        );
        std::fs::write(p("preload.ldif"), base)?;
        run(
            Command::new(slapadd_binary())
                .arg("-q")
                .arg("-f")
                .arg(p("slapd.conf"))
                .arg("-l")
                .arg(p("preload.ldif")),
            "slapadd",
        )?;

        let port = free_port()?;
        let tls_port = if opts.tls { Some(free_port()?) } else { None };
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if let Some(tp) = tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{tp}/"));
        }
        let child = Command::new(slapd_binary())
            .arg("-f")
            .arg(p("slapd.conf"))
            .arg("-h")
            .arg(&urls)
            // -d keeps slapd in the foreground, so the child is slapd itself.
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(p("slapd.log"))?))
            .spawn()?;
        let mut s = Slapd {
            dir,
            child: Some(child),
            port,
            tls_port,
        };
        s.wait_ready(Duration::from_secs(15))?;
        Ok(s)
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let started = Instant::now();
        let mut ports = vec![self.port];
        ports.extend(self.tls_port);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(self.dir.path().join("slapd.log"))
                        .unwrap_or_default();
                    return Err(io::Error::other(format!("slapd exited ({status}): {log}")));
                }
            }
            if ports.iter().all(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], *p)),
                    Duration::from_millis(200),
                )
                .is_ok()
            }) {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(io::Error::other("slapd did not start listening in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://localhost:PORT` (the certificate names 127.0.0.1 and localhost).
    pub fn ldaps_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("ldaps://127.0.0.1:{p}"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign anything this server presents.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Adds entries through the running server (so overlays such as memberof run).
    pub fn ldapadd(&self, ldif: &str) -> io::Result<()> {
        self.ldap_tool("ldapadd", ldif)
    }

    /// Modifies entries through the running server (`changetype: modify` LDIF).
    pub fn ldapmodify(&self, ldif: &str) -> io::Result<()> {
        self.ldap_tool("ldapmodify", ldif)
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) -> io::Result<()> {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PW])
            .stdin(Stdio::piped())
            // Not piped: ldapadd prints a line per entry and would block on a full pipe.
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(ldif.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// Kills the server at once (SIGKILL): a server that dies in the middle of a read.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}
