//! What Envoy is told: OK with a decision header, or an HTTP error whose
//! body has Azure Resource Manager's shape (`{"error":{"code","message"}}`),
//! so Azure SDKs and `az` show rampart's refusal as they show ARM's own.
//! Every answer carries the same dynamic metadata for Envoy's access log:
//! `decision`, `reason`, `operation`, `scope`, `decision_id`.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;
use serde_json::json;

use crate::engine::{DecisionId, Reason, Verdict};

/// The decision id, on every answer that has one.
pub const DECISION_ID_HEADER: &str = "x-rampart-decision-id";
/// The id of the elevation rampart filed, on an `ApprovalRequired` answer.
pub const ELEVATION_ID_HEADER: &str = "x-rampart-elevation-id";

/// The error codes of rampart's refusals. `AuthorizationFailed` is ARM's
/// own; the others are rampart's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 403: the engine denies the operation.
    AuthorizationFailed,
    /// 403: the operation needs a human's approval (an elevation).
    ApprovalRequired,
    /// 403: the configured identity source gave no principal.
    IdentityNotFound,
    /// 403: a batch or deployment whose inner operations cannot all be
    /// judged from its body.
    RequestBodyNotVerifiable,
    /// 400: the method or path is malformed, or names no operation.
    InvalidRequestPath,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AuthorizationFailed => "AuthorizationFailed",
            Code::ApprovalRequired => "ApprovalRequired",
            Code::IdentityNotFound => "IdentityNotFound",
            Code::RequestBodyNotVerifiable => "RequestBodyNotVerifiable",
            Code::InvalidRequestPath => "InvalidRequestPath",
        }
    }

    fn http(self) -> HttpStatusCode {
        match self {
            Code::InvalidRequestPath => HttpStatusCode::BadRequest,
            _ => HttpStatusCode::Forbidden,
        }
    }

    fn grpc(self) -> tonic::Code {
        match self {
            Code::InvalidRequestPath => tonic::Code::InvalidArgument,
            _ => tonic::Code::PermissionDenied,
        }
    }
}

/// The one spelling of a verdict.
/// A decision on one operation, owned so it outlives its snapshot guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    pub reason: Reason,
    pub operation: String,
    pub scope: String,
    pub data_action: bool,
    pub decision_id: DecisionId,
    /// Where in the request body the operation was found (inner
    /// operations of a batch or deployment).
    pub at: Option<String>,
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The dynamic metadata of an answer; `id` is the decision id, written once.
fn metadata(judged: Option<(&Judged, &str)>, code: Option<Code>) -> Struct {
    let mut fields = std::collections::HashMap::with_capacity(6);
    match judged {
        Some((j, id)) => {
            fields.insert("decision".to_owned(), string(j.verdict.as_str()));
            fields.insert("reason".to_owned(), string(j.reason.as_str()));
            fields.insert("operation".to_owned(), string(&j.operation));
            fields.insert("scope".to_owned(), string(&j.scope));
            fields.insert("decision_id".to_owned(), string(id));
        }
        None => {
            fields.insert("decision".to_owned(), string(Verdict::Deny.as_str()));
        }
    }
    if let Some(code) = code {
        fields.insert("error".to_owned(), string(code.as_str()));
    }
    Struct { fields }
}

/// Allow: the request goes on to ARM; the client sees the decision id, and
/// rampart's own request headers (`strip`) are not forwarded.
pub fn allow(judged: &Judged, strip: &[&str]) -> CheckResponse {
    let id = judged.decision_id.to_string();
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Ok as i32,
            ..Default::default()
        }),
        dynamic_metadata: Some(metadata(Some((judged, &id)), None)),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            response_headers_to_add: vec![header(DECISION_ID_HEADER, &id)],
            headers_to_remove: strip.iter().map(|h| (*h).to_owned()).collect(),
            ..Default::default()
        })),
    }
}

/// Any refusal: the ARM-shaped body, its status, and headers.
pub fn refuse(
    code: Code,
    message: &str,
    judged: Option<&Judged>,
    additional_info: Option<serde_json::Value>,
    extra_headers: &[(&str, &str)],
) -> CheckResponse {
    // In ARM's order: code, message, then details.
    #[derive(serde::Serialize)]
    struct ArmError<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(rename = "additionalInfo", skip_serializing_if = "Option::is_none")]
        additional_info: Option<[serde_json::Value; 1]>,
    }
    let error = ArmError {
        code: code.as_str(),
        message,
        additional_info: additional_info.map(|info| [info]),
    };
    let id = judged.map(|j| j.decision_id.to_string());
    let mut headers = vec![header("content-type", "application/json; charset=utf-8")];
    if let Some(id) = &id {
        headers.push(header(DECISION_ID_HEADER, id));
    }
    headers.extend(extra_headers.iter().map(|(k, v)| header(k, v)));
    CheckResponse {
        status: Some(rpc::Status {
            code: code.grpc() as i32,
            message: message.to_owned(),
            ..Default::default()
        }),
        dynamic_metadata: Some(metadata(judged.zip(id.as_deref()), Some(code))),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: code.http() as i32,
            }),
            headers,
            body: json!({ "error": error }).to_string(),
        })),
    }
}

/// Where an inner operation was found, as a sentence tail.
fn found_at(judged: &Judged) -> String {
    judged.at.as_deref().map_or_else(String::new, |at| {
        format!(" It was found at {at} of the request body.")
    })
}

/// Deny, worded as ARM words it.
pub fn deny(judged: &Judged, principal: &str) -> CheckResponse {
    let message = format!(
        "The client '{principal}' with object id '{principal}' does not have authorization to perform action '{}' over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials. (rampart: {}, {}; decision {}.){}",
        judged.operation,
        judged.scope,
        judged.reason.as_str(),
        judged.reason.message(),
        judged.decision_id,
        found_at(judged),
    );
    refuse(Code::AuthorizationFailed, &message, Some(judged), None, &[])
}

/// The elevation rampart filed for an `ApprovalRequired` answer, or why
/// none was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// Filing is off: the agent asks itself.
    NotAsked,
    /// Filed (or joined): its id and state.
    Elevation { id: String, state: &'static str },
    /// Filing failed.
    Failed(String),
}

/// Approval required: a distinct 403 that names the elevation to wait on.
pub fn approval_required(judged: &Judged, principal: &str, filed: &Filed) -> CheckResponse {
    let next = match filed {
        Filed::NotAsked => "Request an elevation for this action and scope (rampart.v1.Authorizer/RequestElevation), wait for a human's decision, then retry.".to_owned(),
        Filed::Elevation { id, state } => format!(
            "Elevation {id} was filed and is {state}: wait for it (rampart.v1.Authorizer/RequestElevation with the same action and scope, or Approvals GetElevation {id}), then retry."
        ),
        Filed::Failed(why) => format!(
            "rampart could not file an elevation ({why}); request one for this action and scope (rampart.v1.Authorizer/RequestElevation), then retry."
        ),
    };
    let message = format!(
        "The client '{principal}' with object id '{principal}' needs a human's approval to perform action '{}' over scope '{}' ({}, {}; decision {}). {next}{}",
        judged.operation,
        judged.scope,
        judged.reason.as_str(),
        judged.reason.message(),
        judged.decision_id,
        found_at(judged),
    );
    let mut info = json!({
        "action": judged.operation,
        "scope": judged.scope,
        "dataAction": judged.data_action,
        "reason": judged.reason.as_str(),
        "decisionId": judged.decision_id.to_string(),
    });
    let mut headers = Vec::new();
    if let Filed::Elevation { id, state } = filed {
        info["elevationId"] = json!(id);
        info["elevationState"] = json!(state);
        headers.push((ELEVATION_ID_HEADER, id.as_str()));
    }
    refuse(
        Code::ApprovalRequired,
        &message,
        Some(judged),
        Some(json!({ "type": "RampartElevation", "info": info })),
        &headers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(verdict: Verdict, reason: Reason) -> Judged {
        Judged {
            verdict,
            reason,
            operation: "Microsoft.Compute/virtualMachines/delete".into(),
            scope: "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1".into(),
            data_action: false,
            decision_id: DecisionId(42),
            at: None,
        }
    }

    fn denied(response: &CheckResponse) -> (&DeniedHttpResponse, serde_json::Value) {
        match &response.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                (d, serde_json::from_str(&d.body).expect("a JSON body"))
            }
            other => panic!("not denied: {other:?}"),
        }
    }

    fn meta(response: &CheckResponse, key: &str) -> Option<String> {
        match response
            .dynamic_metadata
            .as_ref()?
            .fields
            .get(key)?
            .kind
            .as_ref()?
        {
            Kind::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    #[test]
    fn deny_reads_like_arm() {
        let response = deny(
            &judged(Verdict::Deny, Reason::NoMatchingAssignment),
            "alice",
        );
        let (d, body) = denied(&response);
        assert_eq!(d.status.as_ref().map(|s| s.code), Some(403));
        assert_eq!(body["error"]["code"], "AuthorizationFailed");
        assert!(
            d.body
                .starts_with(r#"{"error":{"code":"AuthorizationFailed","message":"The client"#),
            "ARM's key order: {}",
            d.body
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("The client 'alice' with object id 'alice' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/delete' over scope '/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1' or the scope is invalid."), "{message}");
        assert!(message.contains("NO_MATCHING_ASSIGNMENT"));
        assert_eq!(
            response.status.as_ref().map(|s| s.code),
            Some(tonic::Code::PermissionDenied as i32)
        );
        assert_eq!(meta(&response, "decision").as_deref(), Some("DENY"));
        assert_eq!(
            meta(&response, "reason").as_deref(),
            Some("NO_MATCHING_ASSIGNMENT")
        );
        assert_eq!(
            meta(&response, "decision_id"),
            Some(DecisionId(42).to_string())
        );
    }

    #[test]
    fn allow_carries_the_decision_header_and_metadata() {
        let response = allow(
            &judged(Verdict::Allow, Reason::RoleAssignment),
            &["x-rampart-justification"],
        );
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("not ok")
        };
        let header = ok.response_headers_to_add[0].header.as_ref().unwrap();
        assert_eq!(
            (header.key.as_str(), header.value.clone()),
            (DECISION_ID_HEADER, DecisionId(42).to_string())
        );
        assert_eq!(ok.headers_to_remove, ["x-rampart-justification"]);
        assert_eq!(meta(&response, "decision").as_deref(), Some("ALLOW"));
        assert_eq!(
            meta(&response, "operation").as_deref(),
            Some("Microsoft.Compute/virtualMachines/delete")
        );
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
    }

    #[test]
    fn approval_required_names_the_elevation() {
        let j = judged(Verdict::ApprovalRequired, Reason::NeedsElevation);
        let filed = Filed::Elevation {
            id: "el-1".into(),
            state: "PENDING",
        };
        let response = approval_required(&j, "agent", &filed);
        let (d, body) = denied(&response);
        assert_eq!(d.status.as_ref().map(|s| s.code), Some(403));
        assert_eq!(body["error"]["code"], "ApprovalRequired");
        assert_eq!(
            body["error"]["additionalInfo"][0]["info"]["elevationId"],
            "el-1"
        );
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Elevation el-1 was filed and is PENDING"));
        assert!(d.headers.iter().any(|h| h
            .header
            .as_ref()
            .is_some_and(|h| h.key == ELEVATION_ID_HEADER && h.value == "el-1")));
        assert_eq!(
            meta(&response, "decision").as_deref(),
            Some("APPROVAL_REQUIRED")
        );
        let (_, unfiled) = denied(&approval_required(&j, "agent", &Filed::NotAsked));
        assert!(unfiled["error"]["additionalInfo"][0]["info"]
            .get("elevationId")
            .is_none());
    }

    #[test]
    fn malformed_requests_are_400_and_json_escaped() {
        let response = refuse(Code::InvalidRequestPath, "bad \"path\"\n", None, None, &[]);
        let (d, body) = denied(&response);
        assert_eq!(d.status.as_ref().map(|s| s.code), Some(400));
        assert_eq!(body["error"]["message"], "bad \"path\"\n");
        assert_eq!(
            meta(&response, "error").as_deref(),
            Some("InvalidRequestPath")
        );
        assert_eq!(
            response.status.as_ref().map(|s| s.code),
            Some(tonic::Code::InvalidArgument as i32)
        );
    }
}
