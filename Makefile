# PGXS build of upstream_token. CMakeLists.txt builds the same sources from the same globs.
EXTENSION = upstream_token
MODULE_big = upstream_token
DATA = $(wildcard upstream_token--*.sql)
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --dbname=upstream_token_regress

OBJS = $(patsubst %.cpp,%.o,$(sort $(wildcard src/core/*.cpp src/pg/*.cpp)))

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -Isrc
# -MMD: headers are tracked, so a changed shared-memory struct rebuilds every user of it.
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-missing-field-initializers -fvisibility=hidden -MMD -MP
SHLIB_LINK = -lstdc++ -lcurl -lcrypto

# The JIT bitcode of C++ sources buys nothing (no SQL-inlinable functions) and clang-14
# would need its own flags; skip it.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Server headers are system headers to us: their warnings are not ours to fix.
override CPPFLAGS := $(subst -I$(includedir_server),-isystem $(includedir_server),$(CPPFLAGS))

src/core/%.o: CPPFLAGS += -DUPSTREAM_TOKEN_CORE

EXTRA_CLEAN = $(OBJS:.o=.d)
-include $(OBJS:.o=.d)
