package slstest

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error codes the emulator answers with. They are spelled exactly as SLS (and
// the SDK, which compares some of them literally) spells them, including the
// misspelled consumer-group codes.
const (
	CodeProjectNotExist           = "ProjectNotExist"
	CodeProjectAlreadyExist       = "ProjectAlreadyExist"
	CodeLogStoreNotExist          = "LogStoreNotExist"
	CodeLogStoreAlreadyExist      = "LogStoreAlreadyExist"
	CodeShardNotExist             = "ShardNotExist"
	CodeShardReadOnly             = "ShardReadOnly"
	CodeInvalidCursor             = "InvalidCursor"
	CodeParameterInvalid          = "ParameterInvalid"
	CodePostBodyInvalid           = "PostBodyInvalid"
	CodePostBodyTooLarge          = "PostBodyTooLarge"
	CodePostBodyUncompressError   = "PostBodyUncompressError"
	CodeInvalidCompressType       = "InvalidCompressType"
	CodeInvalidBodyRawSize        = "InvalidBodyRawSize"
	CodeMissingBodyRawSize        = "MissingBodyRawSize"
	CodeInvalidContentType        = "InvalidContentType"
	CodeInvalidKey                = "InvalidKey"
	CodeInvalidSequenceID         = "InvalidSequenceId"
	CodeRequestMethodNotAllowed   = "MethodNotAllowed"
	CodeNotSupported              = "NotSupported"
	CodeConsumerGroupNotExist     = "ConsumerGroupNotExist"
	CodeConsumerGroupAlreadyExist = "ConsumerGroupAlreadyExist"
	CodeConsumerGroupQuotaExceed  = "ConsumerGroupQuotaExceed"
	CodeConsumerNotExist          = "ConsumerNotExsit"
	CodeConsumerNotMatch          = "ConsumerNotMatch"
	CodeShardNotExistCG           = "ShardNotExsit"
	CodeUnauthorized              = "Unauthorized"
	CodeSignatureNotMatch         = "SignatureNotMatch"
	CodeSecurityTokenExpired      = "SecurityTokenExpired"
	CodeInvalidSecurityToken      = "InvalidSecurityToken"
	CodeRequestTimeTooSkewed      = "RequestTimeTooSkewed"
	CodeMissAccessKeyID           = "MissAccessKeyId"
	CodeMissingDate               = "MissingDate"
	CodeInvalidDateFormat         = "InvalidDateFormat"
	CodeShardWriteQuotaExceed     = "ShardWriteQuotaExceed"
	CodeShardReadQuotaExceed      = "ReadQuotaExceed"
	CodeInternalServerError       = "InternalServerError"
	CodeServerBusy                = "ServerBusy"
)

// Error is an SLS-shaped error: an HTTP status and the errorCode /
// errorMessage pair SLS puts in its JSON error body. The SDK turns it into an
// *sls.Error carrying the same code and message.
type Error struct {
	Status  int    // HTTP status code, never 200
	Code    string // SLS error code, e.g. "LogStoreNotExist"
	Message string // human-readable detail
}

func (e *Error) Error() string {
	return fmt.Sprintf("slstest: %d %s: %s", e.Status, e.Code, e.Message)
}

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorBody is the wire shape of an SLS error response.
type errorBody struct {
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
}

// writeError sends e as SLS does: the JSON body and the request id header.
func writeError(w http.ResponseWriter, requestID string, e *Error) {
	body, _ := json.Marshal(errorBody{ErrorCode: e.Code, ErrorMessage: e.Message})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-log-requestid", requestID)
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}
