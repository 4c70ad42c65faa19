// Library entry: the magic block and _PG_init.
#include "pg/prelude.hpp"

#include "pg/engine_shmem.hpp"
#include "pg/gucs.hpp"
#include "pg/log_filter.hpp"

extern "C" {
#pragma GCC visibility push(default)
PG_MODULE_MAGIC;
void _PG_init(void);
#pragma GCC visibility pop
}

// Defines the parameters; when preloaded, also reserves shared memory and registers the engine.
void _PG_init(void) {
    upstream_token::pg::define_gucs();
    upstream_token::pg::install_log_filter();
    if (process_shared_preload_libraries_in_progress) {
        upstream_token::pg::engine_preload_init();
        upstream_token::pg::register_commit_wakeup();
    }
}
