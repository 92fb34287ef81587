//! The one place where the transmitter turns errors into gRPC statuses.

use semclip_core::error::Error as CoreError;
use tonic::{Code, Status};

/// Maps a core-library error to the status a caller sees: a bad image or argument is
/// INVALID_ARGUMENT (the message names the limit when one was exceeded), a model or runtime
/// failure is INTERNAL or UNAVAILABLE.
pub fn to_status(e: CoreError) -> Status {
    match &e {
        CoreError::InvalidInput(_)
        | CoreError::ImageDecode(_)
        | CoreError::ImageTooLarge { .. }
        | CoreError::Tokenizer(_) => Status::invalid_argument(e.to_string()),
        CoreError::Runtime(_) | CoreError::Provider(_) => Status::unavailable(e.to_string()),
        CoreError::Bundle { .. } | CoreError::Io { .. } | CoreError::Onnx { .. } => {
            Status::internal(e.to_string())
        }
    }
}

/// The status of a frame the channel or the receiver refused, from its acknowledgement.
pub fn refusal_status(code: i32, error: &str, message_id: &str) -> Status {
    let code = match Code::from_i32(code) {
        Code::Ok => Code::Unknown,
        c => c,
    };
    Status::new(
        code,
        format!("frame of message {message_id:?} refused: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_limits_are_invalid_argument_naming_the_limit() {
        let e = CoreError::ImageTooLarge {
            what: "encoded size in bytes",
            actual: 20,
            limit_name: "max_image_bytes",
            limit: 10,
        };
        let s = to_status(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().contains("max_image_bytes = 10"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn refusals_keep_the_peer_code() {
        let s = refusal_status(Code::Unavailable as i32, "receiver down", "m1");
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("receiver down"));
        // A refusal that claims OK is still an error.
        assert_eq!(refusal_status(0, "?", "m1").code(), Code::Unknown);
    }
}
