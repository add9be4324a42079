//! The Kubernetes manifests in deploy/kubernetes/ (issue 19).
//!
//! - Every object is validated offline against the Kubernetes API's own schemas by
//!   kubernetes-validate (PyPI) in strict mode (unknown fields are errors), for the newest API
//!   version it bundles and for an older one. The only objects allowed to have no schema are
//!   the custom resources named in [`CUSTOM_KINDS`] (the ServiceMonitor); their fields are
//!   checked here instead.
//! - The fields the schemas cannot judge: one replica and Recreate, the probes on the port the
//!   Service targets, the restricted security context, resources, the NetworkPolicy's ports,
//!   the ServiceMonitor's selector, the mounts, and that every `*_file` of the shipped
//!   configuration is a file the Deployment mounts.
//! - The ConfigMap's embedded configuration is loaded by bbsync itself (`Config::load`), with
//!   only the secret directory moved to a temporary one holding the example Secret's values.
//!
//! YAML and TOML are read by Python (PyYAML comes with kubernetes-validate; `tomllib` with
//! Python 3.11) and inspected here as JSON. Without python3 or kubernetes-validate the tests
//! fail, naming what to install; they never skip.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
/// What scripts/test.sh installs.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
/// Files of the directory that are not resources of kustomization.yaml.
const KUSTOMIZATION: &str = "kustomization.yaml";
const SECRET_EXAMPLE: &str = "secret.example.yaml";
/// Custom resources: kubernetes-validate has no schema for them.
const CUSTOM_KINDS: &[&str] = &["ServiceMonitor", "VolumeSnapshot"];
/// API versions validated against: kubernetes-validate's newest, and an older one that
/// long-supported managed clusters still run.
const KUBE_VERSIONS: &[Option<&str>] = &[None, Some("1.29.0")];

/// The image's conventions (the Dockerfile).
const UID: i64 = 65532;
const CONFIG_DIR: &str = "/etc/bbsync";
const CONFIG_FILE: &str = "/etc/bbsync/bbsync.toml";
const SECRETS_DIR: &str = "/run/secrets/bbsync";
const STATE_DIR: &str = "/var/lib/bbsync";
const HTTP_PORT: i64 = 9184;

// ---- Python: YAML and TOML to JSON, and the validator -----------------------------------------

fn install_hint() -> String {
    format!("install python3 (3.11 or later) and the PyPI package kubernetes-validate: `python3 -m pip install {VALIDATOR}` (scripts/test.sh does)")
}

/// Runs `python3 -c script args...` and returns its stdout; any failure panics naming what
/// to install.
fn python(script: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {}", install_hint()));
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write to python3");
    drop(input);
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "python3 failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        install_hint()
    );
    String::from_utf8(out.stdout).expect("utf8 from python3")
}

/// The validator and PyYAML are importable, or a panic that names the package.
fn require_validator() {
    python("import kubernetes_validate, yaml, tomllib", &[], None);
}

/// Every document of each YAML file, as JSON.
fn yaml_files(paths: &[PathBuf]) -> Vec<Vec<Value>> {
    require_validator();
    let args: Vec<&str> = paths
        .iter()
        .map(|p| p.to_str().expect("utf8 path"))
        .collect();
    let out = python(
        "import json, sys, yaml\n\
         docs = []\n\
         for path in sys.argv[1:]:\n\
         \x20   with open(path) as f:\n\
         \x20       docs.append([d for d in yaml.safe_load_all(f) if d is not None])\n\
         json.dump(docs, sys.stdout)",
        &args,
        None,
    );
    serde_json::from_str(&out).expect("JSON from PyYAML")
}

/// A TOML document as JSON.
fn toml_json(text: &str) -> Value {
    let out = python(
        "import json, sys, tomllib\njson.dump(tomllib.loads(sys.stdin.read()), sys.stdout, default=str)",
        &[],
        Some(text),
    );
    serde_json::from_str(&out).expect("JSON from tomllib")
}

// ---- the manifests ----------------------------------------------------------------------------

struct Manifests {
    kustomization: Value,
    /// The resources kustomization.yaml lists, by file name, each file's objects.
    resources: Vec<(String, Vec<Value>)>,
    secret_example: Value,
}

fn manifests() -> &'static Manifests {
    static M: OnceLock<Manifests> = OnceLock::new();
    M.get_or_init(|| {
        let dir = Path::new(DIR);
        let kustomization = yaml_files(&[dir.join(KUSTOMIZATION)]).remove(0).remove(0);
        let names: Vec<String> = kustomization["resources"]
            .as_array()
            .expect("kustomization.yaml: resources")
            .iter()
            .map(|r| r.as_str().expect("a resource file name").to_owned())
            .collect();
        let mut paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        paths.push(dir.join(SECRET_EXAMPLE));
        let mut docs = yaml_files(&paths);
        let secret = docs.pop().expect("secret.example.yaml");
        assert_eq!(secret.len(), 1, "secret.example.yaml: one Secret");
        Manifests {
            kustomization,
            resources: names.into_iter().zip(docs).collect(),
            secret_example: secret.into_iter().next().expect("the Secret"),
        }
    })
}

impl Manifests {
    fn objects(&self) -> impl Iterator<Item = &Value> {
        self.resources.iter().flat_map(|(_, docs)| docs)
    }

    /// The one object of `kind` among the kustomization's resources.
    fn one(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self.objects().filter(|o| o["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "expected exactly one {kind}");
        found[0]
    }

    fn pod(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod()["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    /// The ConfigMap's bbsync.toml.
    fn config_text(&self) -> &str {
        self.one("ConfigMap")["data"]["bbsync.toml"]
            .as_str()
            .expect("the ConfigMap has data.bbsync.toml")
    }
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v}"))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), str_of(v, k).to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `selector` is non-empty and every label of it is on `target`.
fn selects(selector: &Value, target: &Value, what: &str) {
    let (sel, target) = (labels(selector), labels(target));
    assert!(
        !sel.is_empty(),
        "{what}: an empty selector selects everything"
    );
    for (k, v) in &sel {
        assert_eq!(
            target.get(k),
            Some(v),
            "{what}: selector {k}={v} does not match the labels {target:?}"
        );
    }
}

/// A container port, by number or by name, as its number.
fn resolve_port(port: &Value, container: &Value) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = str_of(port, "a port");
    container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port is named {name:?}"))
}

/// A Kubernetes quantity (`100m`, `1`, `128Mi`, `1G`) in base units.
fn quantity(v: &Value) -> f64 {
    let s = match v {
        Value::Number(n) => return n.as_f64().expect("a number"),
        v => str_of(v, "a quantity"),
    };
    let suffixes: [(&str, f64); 11] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
        ("E", 1e18),
        ("P", 1e15),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suffix, f)| s.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((s, 1.0));
    number
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("{s:?} is not a quantity"))
        * factor
}

const MIB: f64 = 1024.0 * 1024.0;

// ---- schemas ----------------------------------------------------------------------------------

/// The ```yaml blocks of deploy/kubernetes/README.md, each written to a file: whole manifests
/// only, so that what the README tells people to apply is validated too.
fn readme_manifests(dir: &Path) -> Vec<PathBuf> {
    let readme = std::fs::read_to_string(Path::new(DIR).join("README.md"))
        .expect("deploy/kubernetes/README.md");
    let mut files = Vec::new();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match &mut block {
            None if line.trim_start() == "```yaml" => block = Some(String::new()),
            Some(text) if line.trim_start() == "```" => {
                let path = dir.join(format!("readme-{}.yaml", files.len()));
                std::fs::write(&path, &*text).expect("write a README block");
                files.push(path);
                block = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(block.is_none(), "README.md: a ```yaml block is not closed");
    files
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas_strictly() {
    require_validator();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = Path::new(DIR);
    let mut files: Vec<PathBuf> = manifests()
        .resources
        .iter()
        .map(|(name, _)| dir.join(name))
        .collect();
    files.push(dir.join(SECRET_EXAMPLE));
    let readme = readme_manifests(tmp.path());
    assert!(
        !readme.is_empty(),
        "README.md has no ```yaml manifest (the backup pod)"
    );
    files.extend(readme);
    let docs = yaml_files(&files);

    for version in KUBE_VERSIONS {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "kubernetes_validate", "--strict"]);
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        let out = cmd
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {}", install_hint()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let which = version.unwrap_or("its newest");
        assert!(
            out.status.success(),
            "kubernetes-validate --strict (Kubernetes {which}) refused a manifest:\n{report}"
        );
        // Exit 0 is not enough: a resource with no schema only warns. Every object must have
        // passed, by name; a custom resource may only be reported as having no schema.
        for (path, objects) in files.iter().zip(&docs) {
            let path = path.to_str().expect("utf8");
            assert!(!objects.is_empty(), "{path}: no object");
            for o in objects {
                let kind = str_of(&o["kind"], "kind");
                let name = str_of(&o["metadata"]["name"], "metadata.name");
                let passed = format!(
                    "{path} passed for resource {}/{name} against version",
                    kind.to_lowercase()
                );
                let no_schema = format!("{path} Couldn't find schema for kind {kind} ");
                let ok = report.lines().any(|l| l.contains(&passed))
                    || (CUSTOM_KINDS.contains(&kind)
                        && report.lines().any(|l| l.contains(&no_schema)));
                assert!(
                    ok,
                    "{path}: {kind}/{name} was not validated (Kubernetes {which}):\n{report}"
                );
                // The README's snapshot (a custom resource, not validated) names the claim.
                if kind == "VolumeSnapshot" {
                    assert_eq!(
                        o["spec"]["source"]["persistentVolumeClaimName"],
                        manifests().one("PersistentVolumeClaim")["metadata"]["name"]
                    );
                }
            }
        }
    }
}

// ---- kustomization ----------------------------------------------------------------------------

#[test]
fn kustomization_lists_every_manifest_and_never_the_secret() {
    let m = manifests();
    assert_eq!(
        m.kustomization["apiVersion"],
        "kustomize.config.k8s.io/v1beta1"
    );
    assert_eq!(m.kustomization["kind"], "Kustomization");
    let listed: BTreeSet<&str> = m.resources.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(listed.len(), m.resources.len(), "a resource listed twice");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(DIR).expect("deploy/kubernetes") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf8");
        if name.ends_with(".yaml") && name != KUSTOMIZATION && name != SECRET_EXAMPLE {
            on_disk.insert(name);
        }
    }
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml must list every manifest of deploy/kubernetes/ (but the example Secret)"
    );
    assert!(
        m.objects().all(|o| o["kind"] != "Secret"),
        "`kubectl apply -k` must never write the credentials"
    );

    let namespace = str_of(&m.kustomization["namespace"], "namespace");
    for o in m.objects().chain([&m.secret_example]) {
        let name = &o["metadata"]["name"];
        if o["kind"] == "Namespace" {
            assert_eq!(name, namespace, "the Namespace is kustomization's");
        } else {
            assert_eq!(
                o["metadata"]["namespace"], namespace,
                "{}/{name}: metadata.namespace (for `kubectl apply -f` as well as -k)",
                o["kind"]
            );
        }
    }

    // kubectl's built-in kustomize, where there is one (it is not needed for anything else):
    // it must build the same objects.
    match Command::new("kubectl").args(["kustomize", DIR]).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let tmp = tempfile::tempdir().expect("tempdir");
            let built = tmp.path().join("built.yaml");
            std::fs::write(&built, &out.stdout).expect("write the build");
            let built = yaml_files(&[built]).remove(0);
            let ids = |objects: &mut dyn Iterator<Item = &Value>| -> BTreeSet<String> {
                objects
                    .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                    .collect()
            };
            assert_eq!(ids(&mut built.iter()), ids(&mut m.objects()));
        }
        Err(_) => eprintln!("note: no kubectl here; `kubectl kustomize` not tried"),
    }
}

// ---- the Deployment ---------------------------------------------------------------------------

#[test]
fn one_writer_one_replica_recreate_and_a_persistent_volume() {
    let m = manifests();
    let d = m.one("Deployment");
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1, "never two writers: one replica");
    assert_eq!(
        spec["strategy"]["type"], "Recreate",
        "an upgrade must stop the old pod before the new one starts (never two writers)"
    );
    assert!(spec["strategy"].get("rollingUpdate").is_none());
    selects(
        &spec["selector"]["matchLabels"],
        &spec["template"]["metadata"]["labels"],
        "Deployment selector",
    );

    let pvc = m.one("PersistentVolumeClaim");
    let modes = pvc["spec"]["accessModes"].as_array().expect("accessModes");
    assert!(
        modes == &["ReadWriteOnce"] || modes == &["ReadWriteOncePod"],
        "the state volume is mounted by one node (or pod): {modes:?}"
    );
    assert!(quantity(&pvc["spec"]["resources"]["requests"]["storage"]) > 0.0);
    let volume = m.pod()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["persistentVolumeClaim"].is_object())
        .expect("a PersistentVolumeClaim volume");
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
}

#[test]
fn image_and_command_follow_the_container_image() {
    let c = manifests().container();
    let image = str_of(&c["image"], "image");
    let (repo, tag) = image.rsplit_once(':').expect("a tagged image");
    assert!(
        repo.ends_with("/bbsync"),
        "{image}: the image is bbsync:<version>"
    );
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "the image tag follows Cargo.toml's version"
    );
    assert!(
        c.get("command").is_none(),
        "the image's ENTRYPOINT (/usr/local/bin/bbsync) is kept"
    );
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--config", CONFIG_FILE])
    );
}

#[test]
fn pod_is_restricted() {
    let m = manifests();
    let pod = m.pod();
    let sa = m.one("ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["enableServiceLinks"], false,
        "no BBSYNC_* service variables in the environment"
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod.get(host).is_none_or(|v| v == false), "{host}");
    }

    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], UID);
    assert_eq!(psc["runAsGroup"], UID);
    assert_eq!(
        psc["fsGroup"], UID,
        "the state volume and the secrets belong to the image's group"
    );
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");

    assert!(pod.get("initContainers").is_none_or(|v| v == &Value::Null));
    let c = m.container();
    let csc = &c["securityContext"];
    assert_eq!(csc["runAsNonRoot"], true);
    assert_eq!(csc["runAsUser"], UID);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert!(csc.get("privileged").is_none_or(|v| v == false));
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(csc["capabilities"].get("add").is_none());
    assert_eq!(csc["seccompProfile"]["type"], "RuntimeDefault");

    // Restricted volume types only.
    for v in pod["volumes"].as_array().expect("volumes") {
        let kinds: Vec<&String> = v
            .as_object()
            .expect("a volume")
            .keys()
            .filter(|k| *k != "name")
            .collect();
        assert!(
            kinds.len() == 1
                && ["configMap", "secret", "persistentVolumeClaim", "emptyDir"]
                    .contains(&kinds[0].as_str()),
            "volume {v}: not a restricted volume type"
        );
    }
}

#[test]
fn probes_use_the_endpoints_on_the_port_the_service_targets() {
    let m = manifests();
    let c = m.container();
    let service = m.one("Service");
    let ports = service["spec"]["ports"].as_array().expect("Service ports");
    assert_eq!(ports.len(), 1, "one Service port");
    let port = &ports[0];
    assert!(
        port["name"] == "http" || port["name"] == "metrics",
        "the Service port is named http or metrics"
    );
    assert_eq!(port["port"], HTTP_PORT);
    assert_eq!(resolve_port(&port["targetPort"], c), HTTP_PORT);
    assert!(service["spec"]["type"].is_null() || service["spec"]["type"] == "ClusterIP");
    selects(
        &service["spec"]["selector"],
        &m.one("Deployment")["spec"]["template"]["metadata"]["labels"],
        "Service selector",
    );
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"], true,
        "a pod that is not ready (no recent successful reconcile) must still be scraped"
    );

    let probe = |name: &str| -> (String, i64) {
        let get = &c[name]["httpGet"];
        assert!(get.is_object(), "{name}: an httpGet probe");
        assert!(get["scheme"].is_null() || get["scheme"] == "HTTP");
        (
            str_of(&get["path"], "path").to_owned(),
            resolve_port(&get["port"], c),
        )
    };
    assert_eq!(probe("livenessProbe"), ("/healthz".into(), HTTP_PORT));
    assert_eq!(probe("readinessProbe"), ("/readyz".into(), HTTP_PORT));
    // /readyz is 503 until the first reconcile succeeds, which may take long or fail for a
    // while: a startup probe on it would kill the pod and restart that reconcile for ever.
    let (path, p) = probe("startupProbe");
    assert_eq!((path.as_str(), p), ("/healthz", HTTP_PORT));
}

#[test]
fn resources_are_set_and_requests_fit_the_limits() {
    let r = &manifests().container()["resources"];
    for what in ["cpu", "memory"] {
        let (request, limit) = (&r["requests"][what], &r["limits"][what]);
        assert!(
            !request.is_null() && !limit.is_null(),
            "{what}: request and limit"
        );
        assert!(
            quantity(request) <= quantity(limit),
            "{what}: request {request} > limit {limit}"
        );
    }
    // The measurements the comment in deployment.yaml sizes them from (issue 20, 10k people):
    // idle 50-73 MiB after a reconcile; a peak of 575 MiB during the plan.
    assert!(quantity(&r["requests"]["memory"]) >= 73.0 * MIB);
    assert!(quantity(&r["limits"]["memory"]) >= 575.0 * MIB);
}

// ---- NetworkPolicy, ServiceMonitor ------------------------------------------------------------

/// The `(protocol, port)` pairs of a list of NetworkPolicy rules.
fn rule_ports(rules: &Value, c: &Value) -> BTreeSet<(String, i64)> {
    let mut all = BTreeSet::new();
    for rule in rules.as_array().expect("rules") {
        let ports = rule["ports"]
            .as_array()
            .expect("every rule names its ports (a rule without ports allows all)");
        for p in ports {
            assert!(p.get("endPort").is_none(), "no port ranges");
            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_owned();
            all.insert((protocol, resolve_port(&p["port"], c)));
        }
    }
    all
}

#[test]
fn network_policy_allows_the_endpoints_in_and_dns_ldap_https_out() {
    let m = manifests();
    let np = m.one("NetworkPolicy");
    let spec = &np["spec"];
    selects(
        &spec["podSelector"]["matchLabels"],
        &m.one("Deployment")["spec"]["template"]["metadata"]["labels"],
        "NetworkPolicy podSelector",
    );
    let types: BTreeSet<&str> = spec["policyTypes"]
        .as_array()
        .expect("policyTypes")
        .iter()
        .map(|t| str_of(t, "policyType"))
        .collect();
    assert_eq!(types, BTreeSet::from(["Ingress", "Egress"]));
    let c = m.container();
    let pair = |p: &str, n: i64| (p.to_owned(), n);
    assert_eq!(
        rule_ports(&spec["ingress"], c),
        BTreeSet::from([pair("TCP", HTTP_PORT)])
    );
    assert_eq!(
        rule_ports(&spec["egress"], c),
        BTreeSet::from([
            pair("UDP", 53),
            pair("TCP", 53),
            pair("TCP", 389),
            pair("TCP", 636),
            pair("TCP", 443),
        ])
    );
}

#[test]
fn service_monitor_scrapes_the_service_metrics() {
    // No schema for this custom resource in kubernetes-validate: its fields are checked here,
    // and only fields of the ServiceMonitor v1 CRD are allowed.
    let m = manifests();
    let sm = m.one("ServiceMonitor");
    let service = m.one("Service");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let spec = sm["spec"].as_object().expect("spec");
    for k in spec.keys() {
        assert!(
            ["selector", "endpoints", "namespaceSelector", "jobLabel"].contains(&k.as_str()),
            "spec.{k}: not expected in this ServiceMonitor"
        );
    }
    selects(
        &sm["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"],
        "ServiceMonitor selector",
    );
    assert!(
        sm["spec"]["selector"].get("matchExpressions").is_none(),
        "matchLabels only"
    );
    if let Some(names) = sm["spec"]["namespaceSelector"]["matchNames"].as_array() {
        assert!(names.contains(&service["metadata"]["namespace"]));
    }
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let e = endpoints[0].as_object().expect("an endpoint");
    for k in e.keys() {
        assert!(
            ["port", "path", "scheme", "interval", "scrapeTimeout"].contains(&k.as_str()),
            "endpoints[0].{k}: not expected"
        );
    }
    assert_eq!(e["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(e["path"], "/metrics");
    assert!(e.get("scheme").is_none_or(|s| s == "http"));
    let duration = |k: &str| -> Option<f64> {
        let s = str_of(e.get(k)?, k);
        let secs = s
            .strip_suffix('s')
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{k}: {s:?}, expected seconds such as \"30s\""));
        Some(secs)
    };
    if let (Some(interval), Some(timeout)) = (duration("interval"), duration("scrapeTimeout")) {
        assert!(timeout <= interval, "scrapeTimeout > interval");
    }
}

// ---- volumes, secrets and the configuration ---------------------------------------------------

/// The Deployment's mount of the volume of `kind` (`configMap`, `secret`,
/// `persistentVolumeClaim`): the volume and the mount.
fn mount<'a>(m: &'a Manifests, kind: &str) -> (&'a Value, &'a Value) {
    let volume = m.pod()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v[kind].is_object())
        .unwrap_or_else(|| panic!("no {kind} volume"));
    let mount = m.container()["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|vm| vm["name"] == volume["name"])
        .unwrap_or_else(|| panic!("the {kind} volume is not mounted"));
    assert!(mount.get("subPath").is_none(), "no subPath mounts");
    (volume, mount)
}

/// Every `*_file` key of a TOML tree (as JSON), by its dotted name, with its path.
fn file_keys(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    if let Some(table) = v.as_object() {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if k.ends_with("_file") {
                out.insert(key.clone(), str_of(v, &key).to_owned());
            }
            file_keys(v, &key, out);
        }
    } else if let Some(items) = v.as_array() {
        for (i, v) in items.iter().enumerate() {
            file_keys(v, &format!("{prefix}[{i}]"), out);
        }
    }
}

/// The Secret volume's files: path in the mount -> key of the Secret.
fn secret_files(m: &Manifests) -> BTreeMap<String, String> {
    let (volume, _) = mount(m, "secret");
    volume["secret"]["items"]
        .as_array()
        .expect("the Secret volume lists its items")
        .iter()
        .map(|i| {
            (
                str_of(&i["path"], "path").to_owned(),
                str_of(&i["key"], "key").to_owned(),
            )
        })
        .collect()
}

#[test]
fn mounts_and_every_file_the_configuration_names_line_up() {
    let m = manifests();
    let (config, config_mount) = mount(m, "configMap");
    assert_eq!(
        config["configMap"]["name"],
        m.one("ConfigMap")["metadata"]["name"]
    );
    assert_eq!(config_mount["mountPath"], CONFIG_DIR);
    assert_eq!(config_mount["readOnly"], true);

    let (secret, secret_mount) = mount(m, "secret");
    let example = &m.secret_example;
    assert_eq!(secret["secret"]["secretName"], example["metadata"]["name"]);
    assert_eq!(secret_mount["mountPath"], SECRETS_DIR);
    assert_eq!(secret_mount["readOnly"], true);
    let mode = secret["secret"]["defaultMode"]
        .as_i64()
        .expect("defaultMode");
    assert_eq!(
        mode & 0o007,
        0,
        "secret files are not world-readable: {mode:o}"
    );
    assert_eq!(
        mode & 0o040,
        0o040,
        "secret files are group-readable (fsGroup): {mode:o}"
    );

    let (_, state_mount) = mount(m, "persistentVolumeClaim");
    assert_eq!(state_mount["mountPath"], STATE_DIR);
    assert!(state_mount["readOnly"].is_null() || state_mount["readOnly"] == false);

    // The example Secret provides exactly the keys the Deployment mounts, with values that
    // are obviously placeholders.
    let files = secret_files(m);
    let provided = example["stringData"]
        .as_object()
        .expect("secret.example.yaml: stringData");
    let mounted: BTreeSet<&String> = files.values().collect();
    assert_eq!(mounted, provided.keys().collect::<BTreeSet<_>>());
    for (k, v) in provided {
        assert!(
            str_of(v, k).starts_with("REPLACE-ME"),
            "secret.example.yaml: {k} must be a REPLACE-ME placeholder"
        );
    }

    // Every *_file of the configuration is a file of a volume: a Secret item under
    // /run/secrets/bbsync, or a ConfigMap key beside bbsync.toml. And every mounted secret
    // is used.
    let tree = toml_json(m.config_text());
    let mut named = BTreeMap::new();
    file_keys(&tree, "", &mut named);
    assert!(
        named.contains_key("credentials.admin.token_file"),
        "{named:?}"
    );
    let cm_keys: BTreeSet<&String> = m.one("ConfigMap")["data"]
        .as_object()
        .expect("data")
        .keys()
        .collect();
    let mut used = BTreeSet::new();
    for (key, path) in &named {
        if let Some(file) = path.strip_prefix(&format!("{SECRETS_DIR}/")) {
            assert!(
                files.contains_key(file),
                "{key} = {path:?}: the Deployment mounts no such secret file (it has {files:?})"
            );
            used.insert(file.to_owned());
        } else {
            let file = path.strip_prefix(&format!("{CONFIG_DIR}/")).unwrap_or(path);
            assert!(
                cm_keys.contains(&file.to_owned()),
                "{key} = {path:?}: neither a secret under {SECRETS_DIR} nor a key of the ConfigMap"
            );
        }
    }
    let mounted_files: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(
        used, mounted_files,
        "every mounted secret file is some *_file of the configuration"
    );
}

#[test]
fn shipped_configuration_loads_in_bbsync_as_the_pod_would_read_it() {
    let m = manifests();
    // The pod's files, in a temporary directory: the secrets with the example Secret's
    // values, the configuration with only the secret directory moved there.
    let tmp = tempfile::tempdir().expect("tempdir");
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    let values = m.secret_example["stringData"]
        .as_object()
        .expect("stringData");
    for (path, key) in secret_files(m) {
        let value = str_of(&values[&key], &key);
        std::fs::write(secrets.join(&path), format!("{value}\n")).expect("write a secret");
    }
    let text = m.config_text().replace(
        &format!("{SECRETS_DIR}/"),
        &format!("{}/", secrets.to_str().expect("utf8")),
    );
    let path = tmp.path().join("bbsync.toml");
    std::fs::write(&path, text).expect("write the configuration");
    let cfg = bbsync::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        cfg.mode,
        bbsync::config::Mode::DryRun,
        "a first deploy changes nothing"
    );
    let listen = cfg.daemon.http.listen.expect("http.listen is set");
    assert!(
        listen.ip().is_unspecified(),
        "{listen}: the probes and Prometheus reach the pod's address, not its loopback"
    );
    assert_eq!(i64::from(listen.port()), HTTP_PORT);
    assert_eq!(
        i64::from(listen.port()),
        m.container()["ports"][0]["containerPort"]
    );

    // The secrets were read from the files they are meant to come from.
    let value = |key: &str| str_of(&values[key], key).to_owned();
    let token = cfg.daemon.http.token.as_ref().expect("http.token");
    assert_eq!(token.expose(), value("http-token"));
    match &cfg.credentials["admin"] {
        bbsync::config::Credential::ApiToken { token, .. } => {
            assert_eq!(token.expose(), value("bitbucket-token"))
        }
        other => panic!("credentials.admin: {:?}", other.kind()),
    }
    match &cfg.source {
        bbsync::config::SourceSettings::Ldap(ldap) => assert_eq!(
            ldap.bind_password.as_ref().expect("bind password").expose(),
            value("ldap-password")
        ),
        _ => panic!("source.kind: the shipped configuration reads LDAP"),
    }

    // What must survive a restart is on the PersistentVolumeClaim.
    let state = Path::new(STATE_DIR);
    let state_dir = cfg.offboarding.state_dir.as_deref().expect("state_dir");
    assert!(state_dir.starts_with(state), "{}", state_dir.display());
    let audit = cfg.audit_path.as_deref().expect("audit.path");
    assert!(audit.starts_with(state), "{}", audit.display());

    // The kubelet waits longer than bbsync's own shutdown.
    let grace = m.pod()["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    let shutdown = i64::try_from(cfg.daemon.shutdown_timeout.as_secs()).expect("secs");
    assert!(
        grace > shutdown,
        "terminationGracePeriodSeconds {grace} <= daemon.shutdown_timeout_secs {shutdown}"
    );
}
