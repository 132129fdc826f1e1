// SPDX-License-Identifier: MIT
// quant/scheme_registry.hpp: one canonical name per scheme, aliases to it, and the run-time dispatch to the tag
// (an unknown name lists the known ones).
#include <boost/test/unit_test.hpp>

#include <string>
#include <type_traits>

#include "quant/scheme_registry.hpp"

using namespace loralab::quant;

BOOST_AUTO_TEST_SUITE(scheme_registry)

BOOST_AUTO_TEST_CASE(canonical_names_and_aliases) {
  BOOST_TEST(scheme_name<float32>() == "float32");
  BOOST_TEST(scheme_name<bfloat16>() == "bfloat16");
  BOOST_TEST(scheme_name<nf4<64>>() == "nf4-b64");
  BOOST_TEST(scheme_name<double_quant<nf4<64>>>() == "nf4-b64-dq");
  BOOST_TEST(scheme_name<fp4<128>>() == "fp4-b128");
  BOOST_TEST(scheme_name<int8_rowwise>() == "int8-row");
  BOOST_TEST(canonical_scheme_name("nf4+dq") == "nf4-b64-dq");
  BOOST_TEST(canonical_scheme_name("nf4", true) == "nf4-b64-dq");
  BOOST_TEST(canonical_scheme_name("nf4+DQ") == "nf4-b64-dq");
  BOOST_TEST(canonical_scheme_name("float") == "float32");
  BOOST_TEST(canonical_scheme_name("fp4") == "fp4-b64");
  BOOST_TEST(canonical_scheme_name("none") == "float32");
  BOOST_TEST(canonical_scheme_name("bf16") == "bfloat16");
  BOOST_TEST(canonical_scheme_name("int8") == "int8-row");
  BOOST_TEST(canonical_scheme_name("nf4-b256-dq") == "nf4-b256-dq");
  BOOST_CHECK_THROW(canonical_scheme_name("int8", true), loralab::error);
  BOOST_CHECK_THROW(canonical_scheme_name("nf4+dq", true), loralab::error);
}

BOOST_AUTO_TEST_CASE(dispatch_reaches_the_tag_and_refuses_unknown_names) {
  // every name of the list dispatches to the tag whose name it is
  const auto check = [](const std::string& name) {
    std::string seen;
    dispatch_scheme<model_schemes>(name, [&]<class S>(std::type_identity<S>) { seen = scheme_name<S>(); });
    return seen;
  };
  for (const char* n : {"float32", "bfloat16", "nf4-b64", "nf4-b64-dq", "fp4-b64", "fp4-b64-dq", "int8-row"}) BOOST_TEST(check(n) == n);
  BOOST_TEST(model_schemes::size == 7u);
  BOOST_TEST(model_schemes::contains("nf4-b64-dq"));
  BOOST_TEST(!model_schemes::contains("nf4-b128"));
  try {
    check("nf4-b128");
    BOOST_FAIL("an unknown scheme must throw");
  } catch (const loralab::error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("unknown scheme 'nf4-b128'") != std::string::npos);
    BOOST_TEST(what.find("known: float32, bfloat16, nf4-b64, nf4-b64-dq, fp4-b64, fp4-b64-dq, int8-row") != std::string::npos);
  }
}

BOOST_AUTO_TEST_SUITE_END()
