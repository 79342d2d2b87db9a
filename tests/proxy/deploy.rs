//! `deploy/kubernetes/`: the manifests parse as YAML, the names they use to
//! refer to each other line up (labels and selectors, the ConfigMap, the
//! Secret and its mount, the named port, the headless Service that
//! `peers_dns` names), and the config they ship validates with the proxy's
//! own config parser once the cluster-specific values are filled in.

use std::path::Path;

use shardproxy::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::proxy::TempFile;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

/// Every document in every manifest file.
fn manifests() -> Vec<Yaml> {
    let mut docs = Vec::new();
    for file in [
        "configmap.yaml",
        "deployment.yaml",
        "service-peers.yaml",
        "service.yaml",
    ] {
        let path = Path::new(DIR).join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let parsed = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        docs.extend(parsed);
    }
    docs
}

fn find<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn text<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// Asserts every `selector` label is among `labels`.
fn assert_selects(selector: &Yaml, labels: &Yaml, what: &str) {
    let selector = selector
        .as_hash()
        .unwrap_or_else(|| panic!("{what}: no selector"));
    assert!(!selector.is_empty(), "{what}: empty selector");
    for (key, value) in selector {
        assert_eq!(
            &labels[key.as_str().unwrap()],
            value,
            "{what}: label {key:?}"
        );
    }
}

#[test]
fn kubernetes_manifests_line_up() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "shardproxy");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_selects(
        &deployment["spec"]["selector"]["matchLabels"],
        labels,
        "Deployment",
    );
    let container = &pod["spec"]["containers"][0];
    let port = &container["ports"][0];
    let (port_name, container_port) = (
        text(&port["name"], "port name"),
        port["containerPort"].as_i64(),
    );

    let peers = find(&docs, "Service", "shardproxy-peers");
    assert_eq!(
        text(&peers["spec"]["clusterIP"], "clusterIP"),
        "None",
        "headless"
    );
    assert_selects(&peers["spec"]["selector"], labels, "peers Service");
    let peer_port = &peers["spec"]["ports"][0];
    assert_eq!(
        peer_port["port"].as_i64(),
        container_port,
        "peers talk to the container port"
    );
    let clients = find(&docs, "Service", "shardproxy");
    assert_selects(&clients["spec"]["selector"], labels, "client Service");
    for service in [peers, clients] {
        assert_eq!(
            text(&service["spec"]["ports"][0]["targetPort"], "targetPort"),
            port_name
        );
    }

    // Volumes: the ConfigMap and Secret they name, mounted where the config looks.
    let volumes = pod["spec"]["volumes"].as_vec().expect("volumes");
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount = |name: &str| {
        let mounts = container["volumeMounts"].as_vec().expect("volumeMounts");
        let found = mounts.iter().find(|m| m["name"].as_str() == Some(name));
        text(
            &found.unwrap_or_else(|| panic!("no mount {name}"))["mountPath"],
            "mountPath",
        )
    };
    let config_map_name = text(&volume("config")["configMap"]["name"], "configMap name");
    let config_map = find(&docs, "ConfigMap", config_map_name);
    let config_text = text(&config_map["data"]["config.toml"], "config.toml");
    let command: Vec<&str> = container["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|c| text(c, "command"))
        .collect();
    assert_eq!(
        command.last(),
        Some(&mount("config")),
        "the command reads the mounted config"
    );
    let secret_dir = mount("cluster-secret");
    assert!(volume("cluster-secret")["secret"]["secretName"]
        .as_str()
        .is_some());
    let env = container["env"].as_vec().expect("env");
    assert!(
        env.iter().any(|e| e["name"].as_str() == Some("POD_IP")
            && e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("status.podIP")),
        "POD_IP comes from the pod's status"
    );

    check_shipped_config(
        config_text,
        secret_dir,
        text(&peers["metadata"]["name"], "name"),
        container_port,
    );
}

/// The ConfigMap's config validates, once `${POD_IP}`, the origin and the
/// secret are given values a test machine has.
fn check_shipped_config(
    config_text: &str,
    secret_dir: &str,
    peers_service: &str,
    port: Option<i64>,
) {
    let port = port.expect("a container port");
    assert!(
        config_text.contains("self = \"${POD_IP}:"),
        "self comes from POD_IP"
    );
    assert!(
        config_text.contains(&format!("peers_dns = \"{peers_service}:{port}\"")),
        "peers_dns names the headless Service and the container port"
    );
    assert!(config_text.contains(&format!("listen = [\"0.0.0.0:{port}\"]")));
    let secret_line = format!("secret_file = \"{secret_dir}/");
    assert!(
        config_text.contains(&secret_line),
        "the secret is read from its mount"
    );
    let secret = TempFile::with_contents("a-secret-for-the-manifest-test");
    let local = config_text
        .replace("${POD_IP}", "127.0.0.1")
        .replace("\"origin:80\"", "\"127.0.0.1:80\"")
        .replace(
            &format!("{secret_dir}/cluster-secret"),
            secret.path.to_str().unwrap(),
        );
    let config = Config::parse(&local, "configmap.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert!(config.cache.enabled);
    let cluster = config.cluster.expect("a [cluster] section");
    assert!(cluster.peers_dns.is_some());
}
