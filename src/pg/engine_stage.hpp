// Error containment for one part of the engine (intake, planning, refresh, saving,
// revocation, discovery, maintenance): a failure aborts that part's transaction, is logged,
// and pauses only that part (1 s, doubling to 30 s) while every other part goes on.
#pragma once

#include <exception>
#include <optional>
#include <string>

#include "core/time.hpp"

namespace upstream_token::pg {

// Logs an error the engine recovered from; messages carry no secrets by construction.
void log_recovered(const char* what, const char* message) noexcept;

class Stage {
  public:
    explicit Stage(const char* name) : name_(name) {}

    // Runs fn unless the stage is pausing after a failure; true when it ran to the end.
    template <typename F>
    bool run(F&& fn) {
        if (paused()) return false;
        try {
            fn();
            failures_ = 0;
            return true;
        } catch (const std::exception& e) {
            failed(std::string(e.what()));  // copied: the abort below may free what it points to
        } catch (...) {
            failed("an error of unknown type");
        }
        return false;
    }

    // When the stage runs again after a failure (nullopt when it is not pausing).
    std::optional<MonoTime> resume_at() const;

  private:
    bool paused() const { return failures_ > 0 && mono_now() < resume_at_; }
    void failed(const std::string& what) noexcept;

    const char* name_;
    int failures_ = 0;
    MonoTime resume_at_{};
};

}  // namespace upstream_token::pg
