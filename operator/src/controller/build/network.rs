//! The workspace's Service and NetworkPolicy.
//!
//! The policy is the sandbox's whole network: ingress only from router pods to the
//! sandbox port, egress only to router pods on the gateway port and the egress
//! proxy's port (the sandbox's one way to the internet, decided and audited by
//! the router) and to cluster DNS.
//! Everything else (the internet, other sandboxes, the apiserver) is denied.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        networking::v1::{
            NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
            NetworkPolicyPort, NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{SANDBOX_PORT_NAME, Settings, ValidWorkspace, child_meta, child_name, selector_labels};

/// Namespace label every namespace carries (set by the apiserver since 1.21).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The ClusterIP Service in front of the sandbox pod.
pub fn build_service(ws: &ValidWorkspace, settings: &Settings) -> Service {
    Service {
        metadata: child_meta(ws, child_name(&ws.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(ws)),
            ports: Some(vec![ServicePort {
                name: Some(SANDBOX_PORT_NAME.to_owned()),
                port: i32::from(settings.sandbox_port),
                target_port: Some(IntOrString::String(SANDBOX_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The NetworkPolicy confining the sandbox pod to the router and DNS.
pub fn build_network_policy(ws: &ValidWorkspace, settings: &Settings) -> NetworkPolicy {
    NetworkPolicy {
        metadata: child_meta(ws, child_name(&ws.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(selector_labels(ws))),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![router_peer(settings)]),
                ports: Some(vec![tcp(i32::from(settings.sandbox_port))]),
            }]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![router_peer(settings)]),
                    ports: Some(
                        std::iter::once(settings.router_port)
                            .chain(settings.router_egress_port)
                            .map(|port| tcp(i32::from(port)))
                            .collect(),
                    ),
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(namespace_selector("kube-system")),
                        pod_selector: Some(match_labels(BTreeMap::from([(
                            "k8s-app".to_owned(),
                            "kube-dns".to_owned(),
                        )]))),
                        ip_block: None,
                    }]),
                    ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
                },
            ]),
        }),
    }
}

fn router_peer(settings: &Settings) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(&settings.router_namespace)),
        pod_selector: Some(match_labels(settings.router_pod_labels.clone())),
        ip_block: None,
    }
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    match_labels(BTreeMap::from([(
        NAMESPACE_NAME_LABEL.to_owned(),
        namespace.to_owned(),
    )]))
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

fn tcp(number: i32) -> NetworkPolicyPort {
    port(number, "TCP")
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.to_owned()),
        end_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn service_selects_the_sandbox_pod_on_the_sandbox_port() {
        let service = json(&build_service(&alice(), &Settings::default()));
        assert_eq!(service["metadata"]["name"], "jw-alice");
        assert_eq!(
            service["metadata"]["ownerReferences"][0]["uid"],
            "6f1c2f0e-0000-4000-8000-00000000a11c"
        );
        assert_eq!(
            service["spec"],
            yaml(
                r#"
                type: ClusterIP
                selector:
                  app.kubernetes.io/name: jarvis-sandbox
                  jarvis.dev/workspace: alice
                ports:
                  - { name: ws, port: 7070, targetPort: ws, protocol: TCP }
                "#
            )
        );
    }

    #[test]
    fn network_policy_allows_only_router_and_dns() {
        let policy = json(&build_network_policy(&alice(), &Settings::default()));
        assert_eq!(policy["metadata"]["name"], "jw-alice");
        assert_eq!(policy["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            policy["spec"],
            yaml(
                r#"
                podSelector:
                  matchLabels:
                    app.kubernetes.io/name: jarvis-sandbox
                    jarvis.dev/workspace: alice
                policyTypes: [Ingress, Egress]
                ingress:
                  - from:
                      - namespaceSelector:
                          matchLabels: { kubernetes.io/metadata.name: jarvis }
                        podSelector:
                          matchLabels:
                            app.kubernetes.io/component: router
                            app.kubernetes.io/name: jarvis
                    ports: [{ port: 7070, protocol: TCP }]
                egress:
                  - to:
                      - namespaceSelector:
                          matchLabels: { kubernetes.io/metadata.name: jarvis }
                        podSelector:
                          matchLabels:
                            app.kubernetes.io/component: router
                            app.kubernetes.io/name: jarvis
                    ports: [{ port: 8081, protocol: TCP }, { port: 8082, protocol: TCP }]
                  - to:
                      - namespaceSelector:
                          matchLabels: { kubernetes.io/metadata.name: kube-system }
                        podSelector:
                          matchLabels: { k8s-app: kube-dns }
                    ports: [{ port: 53, protocol: UDP }, { port: 53, protocol: TCP }]
                "#
            )
        );
    }
}
