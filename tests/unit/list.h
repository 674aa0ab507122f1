/*
 * list.h - every C unit test, one TEST(name) line each; name is the
 * function test_<name> defined in tests/unit/test_<file>.c.
 */
TEST(buf_escape)
TEST(error_conditions)
