// Rows of a materialized set-returning function, added from C++.
#pragma once

#include "pg/prelude.hpp"

#include <algorithm>
#include <memory>
#include <vector>

#include "pg/guard.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {

// A nullable text column's value and null flag.
inline std::pair<Datum, bool> opt_text(const std::optional<std::string>& v) {
    if (!v) return {Datum(0), true};
    return {string_to_text_datum(*v), false};
}

// One output row of a materialized set-returning function.
class RowSink {
  public:
    explicit RowSink(FunctionCallInfo fcinfo)
        : rsinfo_(reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo)) {
        pg_call([&] { InitMaterializedSRF(fcinfo, 0); });
    }
    // Appends one row; `nulls` parallels `values`.
    void put(std::vector<Datum> values, const std::vector<bool>& nulls) {
        ReturnSetInfo* rs = rsinfo_;
        std::unique_ptr<bool[]> flags(new bool[nulls.size()]);
        std::copy(nulls.begin(), nulls.end(), flags.get());
        bool* f = flags.get();
        pg_call([&] { tuplestore_putvalues(rs->setResult, rs->setDesc, values.data(), f); });
    }

  private:
    ReturnSetInfo* rsinfo_;
};

}  // namespace upstream_token::pg
