// Errors as the OpenAI API reports them: an HTTP status and {"error": {"message", "type", "param",
// "code"}}. Request handling throws ApiError; the server turns it into the response.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace kestrel::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {})
      : std::runtime_error(std::move(message)), status_(status), param_(std::move(param)), code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string param_, code_;
};

// The JSON body for an error; type follows the status (invalid_request_error, authentication_error,
// not_found_error, rate_limit_error, server_error). Empty param/code become null.
std::string error_body(int status, std::string_view message, std::string_view param = {}, std::string_view code = {});

}  // namespace kestrel::server
