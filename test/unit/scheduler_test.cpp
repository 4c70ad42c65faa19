// The proactive plan: due order, re-planning, bounded size, concurrency limits and pauses.
#include <gtest/gtest.h>

#include "core/scheduler.hpp"

namespace ut = upstream_token;

namespace {
const ut::Time t0{ut::seconds(1'700'000'000)};
ut::TokenKey key(const std::string& p, const std::string& s) {
    return ut::TokenKey{p, s};
}
}  // namespace

TEST(Scheduler, TakesOnlyDuePlansInOrder) {
    ut::Scheduler s(100);
    s.plan(key("p", "b"), 1, t0 + ut::seconds(2));
    s.plan(key("p", "a"), 1, t0 + ut::seconds(1));
    s.plan(key("p", "c"), 1, t0 + ut::seconds(10));
    EXPECT_EQ(s.next_due(), t0 + ut::seconds(1));
    auto due = s.take_due(t0 + ut::seconds(5), 0);
    ASSERT_EQ(due.size(), 2u);
    EXPECT_EQ(due[0].key.session, "a");
    EXPECT_EQ(due[1].key.session, "b");
    EXPECT_EQ(s.size(), 1u);
    EXPECT_EQ(s.in_flight(), 2);
}

TEST(Scheduler, ReplanningReplacesTheOldPlan) {
    ut::Scheduler s(100);
    s.plan(key("p", "a"), 1, t0);
    s.plan(key("p", "a"), 2, t0 + ut::seconds(60));
    EXPECT_EQ(s.size(), 1u);
    EXPECT_TRUE(s.planned(key("p", "a"), 2));
    EXPECT_FALSE(s.planned(key("p", "a"), 1));
    EXPECT_TRUE(s.take_due(t0 + ut::seconds(1), 0).empty());
    s.forget(key("p", "a"));
    EXPECT_EQ(s.size(), 0u);
    EXPECT_FALSE(s.next_due().has_value());
}

TEST(Scheduler, FullPlanKeepsTheEarliest) {
    ut::Scheduler s(2);
    EXPECT_TRUE(s.plan(key("p", "a"), 1, t0 + ut::seconds(5)));
    EXPECT_TRUE(s.plan(key("p", "b"), 1, t0 + ut::seconds(6)));
    EXPECT_FALSE(s.plan(key("p", "c"), 1, t0 + ut::seconds(7)));
    EXPECT_TRUE(s.plan(key("p", "d"), 1, t0 + ut::seconds(1)));
    EXPECT_EQ(s.size(), 2u);
    EXPECT_FALSE(s.planned(key("p", "b"), 1));
}

TEST(Scheduler, GlobalAndProviderLimitsHoldPlansBack) {
    ut::Scheduler s(100);
    s.set_provider_limit("slow", 1);
    for (int i = 0; i < 3; ++i) s.plan(key("slow", std::to_string(i)), 1, t0);
    for (int i = 0; i < 3; ++i) s.plan(key("fast", std::to_string(i)), 1, t0);
    auto first = s.take_due(t0, 4);
    ASSERT_EQ(first.size(), 4u);
    EXPECT_EQ(s.in_flight("slow"), 1);
    EXPECT_EQ(s.in_flight("fast"), 3);
    EXPECT_TRUE(s.take_due(t0, 10).empty()) << "slow is at its own limit";
    s.finished("fast");
    EXPECT_TRUE(s.take_due(t0, 10).empty());
    s.finished("slow");
    auto next = s.take_due(t0, 4);
    ASSERT_EQ(next.size(), 1u);
    EXPECT_EQ(next[0].key.provider, "slow");
    EXPECT_EQ(s.in_flight(), 3);
    EXPECT_FALSE(s.may_start("fast", 3)) << "global limit";
}

TEST(Scheduler, PausedProviderWaitsWhileOthersRun) {
    ut::Scheduler s(100);
    s.plan(key("limited", "a"), 1, t0);
    s.plan(key("other", "b"), 1, t0);
    s.pause("limited", t0 + ut::seconds(5));
    auto now = s.take_due(t0, 0);
    ASSERT_EQ(now.size(), 1u);
    EXPECT_EQ(now[0].key.provider, "other");
    EXPECT_EQ(s.next_due(), t0 + ut::seconds(5));
    EXPECT_TRUE(s.take_due(t0 + ut::seconds(4), 0).empty());
    EXPECT_EQ(s.take_due(t0 + ut::seconds(5), 0).size(), 1u);
    EXPECT_FALSE(s.paused_until("limited", t0 + ut::seconds(5)).has_value());
}
