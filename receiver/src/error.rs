//! The one place where the receiver turns core-library and store errors into gRPC
//! statuses.

use semclip_core::error::Error as CoreError;
use tonic::Status;
use tracing::warn;

use crate::store::StoreError;

/// Maps a store error to the status a caller sees: Redis down or too slow is UNAVAILABLE
/// (retry later, or another replica), an unreadable record is DATA_LOSS. Both name Redis
/// and are logged as warnings, since an operator has to act on them.
pub fn store_status(e: StoreError) -> Status {
    warn!("{e}");
    match &e {
        StoreError::Unavailable { .. } | StoreError::BadUrl { .. } => {
            Status::unavailable(e.to_string())
        }
        StoreError::Corrupt { .. } => Status::data_loss(e.to_string()),
    }
}

/// Maps a core-library error to the status a caller sees: bad caller input is
/// INVALID_ARGUMENT, a model or runtime failure is INTERNAL (the message names the model).
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn caller_mistakes_and_server_faults_get_different_codes() {
        let bad = CoreError::InvalidInput("labels is empty".into());
        assert_eq!(to_status(bad).code(), Code::InvalidArgument);

        let onnx = CoreError::Onnx {
            model: "jscc_k8_decoder.onnx".into(),
            message: "shape".into(),
        };
        let status = to_status(onnx);
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("jscc_k8_decoder.onnx"));
    }

    #[test]
    fn store_failures_name_redis() {
        let down = StoreError::Unavailable {
            url: "redis://127.0.0.1:1/0".into(),
            cause: redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )),
        };
        let status = store_status(down);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status
            .message()
            .contains("redis store at redis://127.0.0.1:1/0"));
    }
}
