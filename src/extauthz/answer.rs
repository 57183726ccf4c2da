//! What Envoy is told: OK with a decision header, or an HTTP error whose
//! body has Azure Resource Manager's shape (`{"error":{"code","message"}}`),
//! so Azure SDKs and `az` show rampart's refusal as they show ARM's own.
//! Every answer carries the same dynamic metadata for Envoy's access log:
//! `decision`, `reason`, `operation`, `scope`, `decision_id`.

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use serde_json::json;

use super::protobuf::Writer;
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

    /// The HTTP status (`envoy.type.v3.StatusCode` numbers them so).
    fn http(self) -> i64 {
        match self {
            Code::InvalidRequestPath => 400,
            _ => 403,
        }
    }

    fn grpc(self) -> tonic::Code {
        match self {
            Code::InvalidRequestPath => tonic::Code::InvalidArgument,
            _ => tonic::Code::PermissionDenied,
        }
    }
}

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

/// An encoded `envoy.service.auth.v3.CheckResponse`, as sent to Envoy.
/// It is written field by field (see [`super::protobuf`]): an allow answer
/// is one buffer, where Envoy's generated message needed a map of owned
/// strings for its metadata alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    bytes: Vec<u8>,
}

impl Answer {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Envoy's message, read back (tests, tools).
    pub fn to_envoy(&self) -> Result<CheckResponse, prost::DecodeError> {
        prost::Message::decode(&self.bytes[..])
    }
}

/// Field numbers of the messages an answer writes.
mod field {
    /// `CheckResponse`.
    pub const STATUS: u32 = 1;
    pub const DENIED_RESPONSE: u32 = 2;
    pub const OK_RESPONSE: u32 = 3;
    pub const DYNAMIC_METADATA: u32 = 4;
    /// `google.rpc.Status`.
    pub const STATUS_CODE: u32 = 1;
    pub const STATUS_MESSAGE: u32 = 2;
    /// `OkHttpResponse`.
    pub const HEADERS_TO_REMOVE: u32 = 5;
    pub const RESPONSE_HEADERS_TO_ADD: u32 = 6;
    /// `DeniedHttpResponse`.
    pub const DENIED_STATUS: u32 = 1;
    pub const DENIED_HEADERS: u32 = 2;
    pub const DENIED_BODY: u32 = 3;
    /// `envoy.type.v3.HttpStatus`.
    pub const HTTP_STATUS_CODE: u32 = 1;
    /// `HeaderValueOption.header`, `HeaderValue.key` and `.value`.
    pub const OPTION_HEADER: u32 = 1;
    pub const HEADER_KEY: u32 = 1;
    pub const HEADER_VALUE: u32 = 2;
    /// `google.protobuf.Struct.fields`, `Value.string_value`.
    pub const STRUCT_FIELDS: u32 = 1;
    pub const STRING_VALUE: u32 = 3;
}

/// A `HeaderValueOption` in field `number`.
fn header(w: &mut Writer, number: u32, key: &str, value: &str) {
    w.message(number, |w| {
        w.message(field::OPTION_HEADER, |w| {
            w.string(field::HEADER_KEY, key);
            w.string(field::HEADER_VALUE, value);
        })
    });
}

/// A `google.rpc.Status`.
fn status(w: &mut Writer, code: tonic::Code, message: &str) {
    w.message(field::STATUS, |w| {
        w.int(field::STATUS_CODE, code as i64);
        if !message.is_empty() {
            w.string(field::STATUS_MESSAGE, message);
        }
    });
}

/// The dynamic metadata of an answer; `id` is the decision id, written once.
fn metadata(w: &mut Writer, judged: Option<(&Judged, &str)>, code: Option<Code>) {
    let text = |w: &mut Writer, key: &str, value: &str| {
        w.entry(field::STRUCT_FIELDS, key, |w| {
            w.string(field::STRING_VALUE, value)
        })
    };
    w.message(field::DYNAMIC_METADATA, |w| {
        match judged {
            Some((j, id)) => {
                text(w, "decision", j.verdict.as_str());
                text(w, "reason", j.reason.as_str());
                text(w, "operation", &j.operation);
                text(w, "scope", &j.scope);
                text(w, "decision_id", id);
            }
            None => text(w, "decision", Verdict::Deny.as_str()),
        }
        if let Some(code) = code {
            text(w, "error", code.as_str());
        }
    });
}

/// Allow: the request goes on to ARM; the client sees the decision id, and
/// rampart's own request headers (`strip`) are not forwarded.
pub fn allow(judged: &Judged, strip: &[&str]) -> Answer {
    let id = judged.decision_id.text();
    let mut w = Writer::with_capacity(320 + judged.operation.len() + judged.scope.len());
    status(&mut w, tonic::Code::Ok, "");
    w.message(field::OK_RESPONSE, |w| {
        for name in strip {
            w.string(field::HEADERS_TO_REMOVE, name);
        }
        header(
            w,
            field::RESPONSE_HEADERS_TO_ADD,
            DECISION_ID_HEADER,
            id.as_str(),
        );
    });
    metadata(&mut w, Some((judged, id.as_str())), None);
    Answer {
        bytes: w.into_bytes(),
    }
}

/// Any refusal: the ARM-shaped body, its status, and headers.
pub fn refuse(
    code: Code,
    message: &str,
    judged: Option<&Judged>,
    additional_info: Option<serde_json::Value>,
    extra_headers: &[(&str, &str)],
) -> Answer {
    // In ARM's order: code, message, then details.
    #[derive(serde::Serialize)]
    struct ArmError<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(rename = "additionalInfo", skip_serializing_if = "Option::is_none")]
        additional_info: Option<[serde_json::Value; 1]>,
    }
    #[derive(serde::Serialize)]
    struct ArmBody<'a> {
        error: ArmError<'a>,
    }
    let error = ArmError {
        code: code.as_str(),
        message,
        additional_info: additional_info.map(|info| [info]),
    };
    let id = judged.map(|j| j.decision_id.text());
    let id = id.as_ref().map(|id| id.as_str());
    let mut w = Writer::with_capacity(512 + 2 * message.len());
    status(&mut w, code.grpc(), message);
    w.message(field::DENIED_RESPONSE, |w| {
        w.message(field::DENIED_STATUS, |w| {
            w.int(field::HTTP_STATUS_CODE, code.http())
        });
        let headers = [("content-type", "application/json; charset=utf-8")]
            .into_iter()
            .chain(id.map(|id| (DECISION_ID_HEADER, id)))
            .chain(extra_headers.iter().copied());
        for (key, value) in headers {
            header(w, field::DENIED_HEADERS, key, value);
        }
        w.bytes_with(field::DENIED_BODY, |body| {
            // Strings and a JSON value into a Vec: writing cannot fail.
            let _ = serde_json::to_writer(body, &ArmBody { error });
        });
    });
    metadata(&mut w, judged.zip(id), Some(code));
    Answer {
        bytes: w.into_bytes(),
    }
}

/// Where an inner operation was found, as a sentence tail.
fn found_at(judged: &Judged) -> String {
    judged.at.as_deref().map_or_else(String::new, |at| {
        format!(" It was found at {at} of the request body.")
    })
}

/// Deny, worded as ARM words it.
pub fn deny(judged: &Judged, principal: &str) -> Answer {
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
pub fn approval_required(judged: &Judged, principal: &str, filed: &Filed) -> Answer {
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
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::DeniedHttpResponse;
    use envoy_types::pb::google::protobuf::value::Kind;

    fn read(answer: Answer) -> CheckResponse {
        answer.to_envoy().expect("Envoy reads the answer")
    }

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
        let response = read(deny(
            &judged(Verdict::Deny, Reason::NoMatchingAssignment),
            "alice",
        ));
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
        let response = read(allow(
            &judged(Verdict::Allow, Reason::RoleAssignment),
            &["x-rampart-justification"],
        ));
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
        let response = read(approval_required(&j, "agent", &filed));
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
        let (_, unfiled) = denied(&read(approval_required(&j, "agent", &Filed::NotAsked)));
        assert!(unfiled["error"]["additionalInfo"][0]["info"]
            .get("elevationId")
            .is_none());
    }

    #[test]
    fn malformed_requests_are_400_and_json_escaped() {
        let response = read(refuse(
            Code::InvalidRequestPath,
            "bad \"path\"\n",
            None,
            None,
            &[],
        ));
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
